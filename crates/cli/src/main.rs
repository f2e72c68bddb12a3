//! ikit: the command line for developers and CI (run, export, secrets, login, migrate, rotate, verify, dev).
//! Not built yet: this binary holds only its description until its issue lands.

fn main() {
    eprintln!("not built yet");
    std::process::exit(64);
}
