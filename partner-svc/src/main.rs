//! `partner-svc`: a partner's backend, a client of the platform over mutual TLS. Its API
//! for the partner's front ends is `consent.partner.v1.PartnerApp` in `proto/`.

fn main() {
    println!("partner-svc {}", env!("CARGO_PKG_VERSION"));
}
