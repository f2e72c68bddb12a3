//! ikit-health: health, Prometheus metrics, JWKS and authenticated admin actions.
//! Not built yet: this binary holds only its description until its issue lands.

fn main() {
    eprintln!("not built yet");
    std::process::exit(64);
}
