//! The host-local verbs over a locked [`Store`]: each runs under one lock from start to end.

use std::net::IpAddr;

use super::config::Config;
use super::range::RangeSet;
use super::store::{Holder, Holding, Store};
use crate::cni::config::Attachment;
use crate::cni::result::IpConfig;
use crate::cni::{CniError, CniResult, code};

/// ADD: one address from each range set, in order; on any failure the addresses this call
/// reserved are released and nothing else is touched.
pub fn add(conf: &Config, id: &str, ifname: &str) -> CniResult<Vec<IpConfig>> {
    let mut store = Store::open(&conf.data_dir, &conf.name, conf.ranges.len())?;
    let holder = Holder::new(id, ifname);
    let mut requested = conf.requested.clone();
    let mut reserved = Vec::new();
    let mut ips = Vec::new();
    let mut failure = None;
    for (index, set) in conf.ranges.iter().enumerate() {
        let wanted = requested
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| requested.remove(i));
        match allocate(&mut store, set, index, &holder, wanted) {
            Ok((holding, ip)) => {
                reserved.push(holding);
                ips.push(ip);
            }
            Err(e) => {
                failure = Some(e.context(format!("failed to allocate for range {index}")));
                break;
            }
        }
    }
    if failure.is_none() && !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(IpAddr::to_string).collect();
        failure = Some(CniError::internal(format!(
            "failed to allocate all requested IPs: {}",
            list.join(" ")
        )));
    }
    if let Some(err) = failure {
        for holding in &reserved {
            // The error that matters is the allocation's; a leftover is reported by the DEL.
            let _ = store.release(holding);
        }
        store.commit();
        return Err(err);
    }
    store.commit();
    Ok(ips)
}

/// One range set's address, as the reference's `IPAllocator.Get`.
fn allocate(
    store: &mut Store,
    set: &RangeSet,
    index: usize,
    holder: &Holder,
    wanted: Option<IpAddr>,
) -> CniResult<(Holding, IpConfig)> {
    let reserved = |ip: IpAddr, range: &super::range::Range| {
        (
            Holding {
                name: ip.to_string(),
                holder: holder.clone(),
            },
            IpConfig {
                address: range.with_prefix(ip),
                gateway: Some(range.gateway),
                interface: None,
            },
        )
    };
    if let Some(ip) = wanted {
        let range = set
            .range_for(ip)
            .ok_or_else(|| CniError::internal(format!("{ip} not in range set {set}")))?;
        if ip == range.gateway {
            return Err(CniError::internal(format!(
                "requested ip {ip} is subnet's gateway"
            )));
        }
        if !store.reserve(ip, holder, index)? {
            return Err(CniError::internal(format!(
                "requested IP address {ip} is not available in range set {set}"
            )));
        }
        return Ok(reserved(ip, range));
    }
    // The spec forbids a second allocation for the same container and interface.
    let held = store.holdings(&holder.id)?;
    if let Some(ip) = held
        .iter()
        .filter(|h| h.holder.belongs_to(holder))
        .filter_map(Holding::ip)
        .find(|ip| set.contains(*ip))
    {
        return Err(CniError::internal(format!(
            "{ip} has been allocated to {}, duplicate allocation is not allowed",
            holder.id
        )));
    }
    for (ip, range) in set.candidates(store.last_reserved(index)) {
        if store.reserve(ip, holder, index)? {
            return Ok(reserved(ip, range));
        }
    }
    Err(CniError::internal(format!(
        "no IP addresses available in range set: {set}"
    )))
}

/// DEL: removes the files holding `id` and `ifname`, or failing those, the ID-only files of old
/// versions (per range set, as the reference loops). Missing files are fine.
pub fn del(conf: &Config, id: &str, ifname: &str) -> CniResult<()> {
    let mut store = Store::open(&conf.data_dir, &conf.name, conf.ranges.len())?;
    let key = Holder::new(id, ifname);
    let legacy = Holder {
        id: key.id.clone(),
        ifname: None,
    };
    let mut remaining = store.holdings(&key.id)?;
    let mut errors = Vec::new();
    for _ in &conf.ranges {
        let mut doomed: Vec<Holding> = remaining
            .iter()
            .filter(|h| h.holder == key)
            .cloned()
            .collect();
        if doomed.is_empty() {
            doomed = remaining
                .iter()
                .filter(|h| h.holder == legacy)
                .cloned()
                .collect();
        }
        for holding in &doomed {
            if let Err(e) = store.release(holding) {
                errors.push(e.msg);
            }
        }
        remaining.retain(|h| !doomed.contains(h));
    }
    store.commit();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(errors.join(";")))
    }
}

/// CHECK: the container holds some address here (the reference checks nothing more).
pub fn check(conf: &Config, id: &str, ifname: &str) -> CniResult<()> {
    let mut store = Store::open(&conf.data_dir, &conf.name, conf.ranges.len())?;
    let key = Holder::new(id, ifname);
    let found = store
        .holdings(&key.id)?
        .iter()
        .any(|h| h.holder.belongs_to(&key));
    store.commit();
    if found {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "host-local: Failed to find address added by container {id}"
        )))
    }
}

/// GC: drops every reservation not held by one of `valid` (an ID-only file is kept when its
/// container is), files naming no holder and planted symlinks.
pub fn gc(conf: &Config, valid: &[Attachment]) -> CniResult<()> {
    let Some(mut store) = Store::open_existing(&conf.data_dir, &conf.name, conf.ranges.len())?
    else {
        return Ok(());
    };
    let errors = store.collect(|holder| {
        valid.iter().any(|a| {
            a.container_id == holder.id && holder.ifname.as_ref().is_none_or(|i| *i == a.ifname)
        })
    })?;
    store.commit();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(errors.join(";")))
    }
}

/// STATUS: the data directory is usable and every range set has a free address.
pub fn status(conf: &Config) -> CniResult<()> {
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let store = Store::open(&conf.data_dir, &conf.name, conf.ranges.len()).map_err(|e| {
        unavailable(format!(
            "data directory {} is not usable: {}",
            conf.network_dir().display(),
            e.msg
        ))
    })?;
    store.writable().map_err(|e| {
        unavailable(format!(
            "data directory {} is not writable: {}",
            store.path().display(),
            e.msg
        ))
    })?;
    for (index, set) in conf.ranges.iter().enumerate() {
        let mut free = false;
        for (ip, _) in set.candidates(store.last_reserved(index)) {
            if store.is_free(ip).map_err(|e| unavailable(e.msg))? {
                free = true;
                break;
            }
        }
        if !free {
            return Err(unavailable(format!(
                "no IP addresses available in range set: {set}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::host_local::range::RawRange;
    use std::path::PathBuf;

    struct Net {
        conf: Config,
    }

    impl Net {
        /// A network over temp data dir with range sets given as (subnet, start, end, gateway).
        fn new(tag: &str, sets: &[&[(&str, &str, &str, &str)]]) -> Net {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let data_dir =
                std::env::temp_dir().join(format!("cnibox-alloc-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&data_dir);
            let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let ranges = sets
                .iter()
                .map(|set| {
                    let raw: Vec<RawRange> = set
                        .iter()
                        .map(|(subnet, start, end, gw)| RawRange {
                            subnet: text(subnet),
                            range_start: text(start),
                            range_end: text(end),
                            gateway: text(gw),
                        })
                        .collect();
                    RangeSet::parse(&raw).unwrap()
                })
                .collect();
            Net {
                conf: Config {
                    name: "net".into(),
                    data_dir,
                    ranges,
                    requested: Vec::new(),
                    routes: Vec::new(),
                    resolv_conf: None,
                },
            }
        }

        fn dir(&self) -> PathBuf {
            self.conf.network_dir()
        }

        fn add(&self, id: &str) -> CniResult<Vec<String>> {
            add(&self.conf, id, "eth0")
                .map(|ips| ips.iter().map(|ip| ip.address.to_string()).collect())
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Net {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.conf.data_dir);
        }
    }

    #[test]
    fn round_robin_skips_the_gateway_and_exhausts() {
        let net = Net::new("rr", &[&[("10.0.0.0/29", "", "", "")]]);
        for (id, want) in [
            ("a", "10.0.0.2/29"),
            ("b", "10.0.0.3/29"),
            ("c", "10.0.0.4/29"),
        ] {
            assert_eq!(net.add(id).unwrap(), [want]);
        }
        del(&net.conf, "a", "eth0").unwrap();
        // Round robin: after .4 comes .5, not the freed .2.
        assert_eq!(net.add("d").unwrap(), ["10.0.0.5/29"]);
        assert_eq!(net.add("e").unwrap(), ["10.0.0.6/29"]);
        assert_eq!(net.add("f").unwrap(), ["10.0.0.2/29"]);
        let err = net.add("g").unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str()),
            (
                999,
                "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6"
            )
        );
        let mut files = net.files();
        files.retain(|f| f.starts_with("10."));
        assert_eq!(files.len(), 5);
        let status_err = status(&net.conf).unwrap_err();
        assert_eq!(status_err.code, 50);
        del(&net.conf, "c", "eth0").unwrap();
        status(&net.conf).unwrap();
    }

    #[test]
    fn duplicate_allocation_is_refused_per_interface() {
        let net = Net::new("dup", &[&[("10.0.0.0/24", "", "", "")]]);
        net.add("a").unwrap();
        let err = net.add("a").unwrap_err();
        assert_eq!(
            err.msg,
            "failed to allocate for range 0: 10.0.0.2 has been allocated to a, duplicate allocation is not allowed"
        );
        assert_eq!(
            add(&net.conf, "a", "eth1").unwrap()[0].address.to_string(),
            "10.0.0.3/24"
        );
        check(&net.conf, "a", "eth1").unwrap();
        // An ID-only file of an old version counts as the container's. Written a few clock
        // ticks later, as a separate process would: kernels before 6.13 stamp directories with
        // a coarse clock, and a write in the same tick as ours is the documented blind spot.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(net.dir().join("10.0.0.9"), "old").unwrap();
        let err = net.add("old").unwrap_err();
        assert!(
            err.msg.contains("10.0.0.9 has been allocated to old"),
            "{err}"
        );
        check(&net.conf, "old", "eth7").unwrap();
        del(&net.conf, "old", "eth7").unwrap();
        assert!(!net.dir().join("10.0.0.9").exists());
        assert_eq!(
            check(&net.conf, "old", "eth7").unwrap_err().msg,
            "host-local: Failed to find address added by container old"
        );
    }

    #[test]
    fn requested_addresses() {
        let mut net = Net::new(
            "req",
            &[&[("10.0.0.0/24", "", "", "")], &[("fd00::/64", "", "", "")]],
        );
        net.conf.requested = vec!["fd00::50".parse().unwrap(), "10.0.0.40".parse().unwrap()];
        assert_eq!(net.add("a").unwrap(), ["10.0.0.40/24", "fd00::50/64"]);
        let err = net.add("b").unwrap_err();
        assert_eq!(
            err.msg,
            "failed to allocate for range 0: requested IP address 10.0.0.40 is not available in range set 10.0.0.1-10.0.0.254"
        );
        net.conf.requested = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(
            net.add("b").unwrap_err().msg,
            "failed to allocate for range 0: requested ip 10.0.0.1 is subnet's gateway"
        );
        net.conf.requested = vec![
            "10.0.0.41".parse().unwrap(),
            "10.0.0.42".parse().unwrap(),
            "10.9.0.1".parse().unwrap(),
        ];
        assert_eq!(
            net.add("b").unwrap_err().msg,
            "failed to allocate all requested IPs: 10.0.0.42 10.9.0.1"
        );
        // Nothing of the failed attempts stays behind.
        let mut held: Vec<String> = net
            .files()
            .into_iter()
            .filter(|f| !f.starts_with("l"))
            .collect();
        held.sort();
        assert_eq!(held, ["10.0.0.40", "fd00::50"]);
        // The round robin goes on after the last address reserved, even by a failed ADD (as the
        // reference's last_reserved_ip is not rolled back either).
        net.conf.requested.clear();
        assert_eq!(net.add("c").unwrap(), ["10.0.0.42/24", "fd00::52/64"]);
    }

    #[test]
    fn a_failing_set_releases_the_others() {
        let net = Net::new(
            "rollback",
            &[
                &[("10.0.0.0/24", "", "", "")],
                &[("10.1.0.0/30", "", "", "")],
            ],
        );
        assert_eq!(net.add("a").unwrap(), ["10.0.0.2/24", "10.1.0.2/30"]);
        let err = net.add("b").unwrap_err();
        assert_eq!(
            err.msg,
            "failed to allocate for range 1: no IP addresses available in range set: 10.1.0.1-10.1.0.2"
        );
        assert!(!net.dir().join("10.0.0.3").exists());
        // DEL releases every set's address; a second DEL is a no-op.
        del(&net.conf, "a", "eth0").unwrap();
        del(&net.conf, "a", "eth0").unwrap();
        assert_eq!(
            net.files(),
            ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
    }

    #[test]
    fn gc_and_a_missing_directory() {
        let net = Net::new("gc", &[&[("10.0.0.0/24", "", "", "")]]);
        gc(&net.conf, &[]).unwrap();
        assert!(!net.dir().exists());
        net.add("a").unwrap();
        net.add("b").unwrap();
        let keep = [Attachment {
            container_id: "b".into(),
            ifname: "eth0".into(),
        }];
        gc(&net.conf, &keep).unwrap();
        assert_eq!(net.files(), ["10.0.0.3", "last_reserved_ip.0", "lock"]);
        gc(&net.conf, &[]).unwrap();
        assert_eq!(net.files(), ["last_reserved_ip.0", "lock"]);
    }
}
