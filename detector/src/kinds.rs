//! The detector kinds a detector runs: one registration line each, `<section>: <type>`, where `<section>` is the
//! kind's `[detector.<section>]` configuration section (and its field in the configuration, the per-host state
//! and the engine) and `<type>` implements [`crate::kind::DetectorKind`]. The order is the order of the
//! sections in the configuration (and in `netanom config`'s template) and the order in which the engine calls
//! each phase's hooks.
//!
//! `for_each_kind!` hands the list to a macro: `crate::config` builds `DetectorConfig` from it,
//! `crate::state` the per-host `HostState` and `crate::engine` the engine's kinds.

/// Calls `$then! { <the list> }` with the registered kinds: `/// doc` lines, then `section: Type,`, per kind.
macro_rules! for_each_kind {
    ($then:ident) => {
        $then! {
            /// Arrival rate of new connections (kind `rate`).
            rate: crate::rate::RateRule,
            /// Scans and sweeps (kind `fanout`).
            fanout: crate::fanout::FanoutRule,
            /// Extended isolation forest (kind `isolation`).
            forest: crate::forest::IsolationDetector,
            /// Ensemble of small autoencoders over feature subsets, KitNET (kind `autoencoder`).
            autoencoder: crate::autoencoder::AutoencoderDetector,
            /// Destination side, spoofed-source floods (kind `victim`).
            victim: crate::victim::Victim,
            /// k-means over per-host behaviour profiles (kind `profile`).
            profile: crate::profile::ProfileDetector,
            /// Periodic check-ins to one destination (kind `beacon`).
            beacon: crate::beacon::Beacon,
            /// Random forest trained on labelled traffic (kind `supervised`).
            supervised: crate::supervised::SupervisedDetector,
            /// Packets no standard TCP/IP stack sends: stealth scans, OS fingerprinting (kind `probe`).
            probe: crate::misuse::Probe,
            /// Repeated connection attempts to one login service (kind `brute_force`).
            brute_force: crate::misuse::BruteForce,
            /// Sustained long DNS queries (kind `dns_tunnel`).
            dns_tunnel: crate::misuse::DnsTunnel,
            /// Echo requests carrying data unlike ping's pad (kind `icmp_tunnel`).
            icmp_tunnel: crate::icmp_tunnel::IcmpTunnelRule,
            /// UDP, ICMP and other non-TCP packets at flood rate (kind `flood`).
            flood: crate::flood::FloodRule,
            /// Bulk uploads out of proportion to replies and history (kind `exfiltration`).
            exfiltration: crate::exfiltration::ExfiltrationRule,
        }
    };
}
pub(crate) use for_each_kind;

macro_rules! registry {
    ($( $(#[$doc:meta])* $section:ident: $kind:ty, )*) => {
        /// Every registered kind: its section name and the anomaly kinds it produces, in registration order.
        pub const REGISTERED: &[(&str, &[netanom_schemas::AnomalyKind])] =
            &[$( (stringify!($section), <$kind as crate::kind::DetectorKind>::PRODUCES), )*];
    };
}
for_each_kind!(registry);

#[cfg(test)]
mod tests {
    use super::REGISTERED;
    use netanom_schemas::AnomalyKind;

    #[test]
    fn every_anomaly_kind_is_produced_by_exactly_one_registered_kind() {
        for kind in AnomalyKind::ALL {
            let by: Vec<&str> = REGISTERED
                .iter()
                .filter(|(_, produces)| produces.contains(kind))
                .map(|(section, _)| *section)
                .collect();
            assert_eq!(by.len(), 1, "anomaly kind {kind} is produced by {by:?}: register the kind that produces it");
        }
    }
}
