//! ikit-webhook: verifies Infisical webhook signatures and turns folder changes into per-key events.
//! Not built yet: this binary holds only its description until its issue lands.

fn main() {
    eprintln!("not built yet");
    std::process::exit(64);
}
