//! podman's default network (bridge, portmap, firewall, tuning) driven as libcni drives a
//! conflist: ADD through the plugins in order, each getting the previous result as
//! `prevResult` and the runtime's capability arguments in `runtimeConfig`; CHECK with the
//! cached final result; DEL in reverse order with the cached result. At spec 0.4.0 and
//! 1.0.0, with HTTP through the port mapping from the host and, via hairpin, from a second
//! container; everything of the containers gone after DEL. All inside throwaway namespaces.

mod chain_env;
mod common;
mod plugin_env;

use chain_env::*;
use common::*;
use plugin_env::*;

/// The conflist podman writes for its default network (plus dataDirs into the test's scratch
/// dir, and firewall pinned to iptables so that no bus on this machine is ever touched).
fn conflist(host: &Host, version: &str, plugins: &[&str]) -> Value {
    let all = [
        json!({
            "type": "bridge",
            "bridge": "cni-podman0",
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                "dataDir": host.data_dir()
            }
        }),
        json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "dataDir": host.data_dir().join("portmap")
        }),
        json!({
            "type": "firewall",
            "backend": "iptables",
            "dataDir": host.data_dir().join("firewall")
        }),
        json!({"type": "tuning"}),
    ];
    let list: Vec<Value> = all
        .into_iter()
        .filter(|p| plugins.contains(&p["type"].as_str().unwrap()))
        .collect();
    json!({"cniVersion": version, "name": "podman", "plugins": list})
}

/// A minimal libcni: builds each plugin's config from the list the way libcni does.
struct Driver<'a> {
    list: Value,
    plugins: Vec<Plugin>,
    runtime: Value,
    host: &'a Host,
}

impl<'a> Driver<'a> {
    fn new(dir: &AppletDir, host: &'a Host, list: Value, runtime: Value) -> Driver<'a> {
        let plugins = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Plugin::ours(dir, host, p["type"].as_str().unwrap()))
            .collect();
        Driver {
            list,
            plugins,
            runtime,
            host,
        }
    }

    fn config(&self, index: usize, prev: Option<&Value>) -> Value {
        let mut c = self.list["plugins"][index].clone();
        c["name"] = self.list["name"].clone();
        c["cniVersion"] = self.list["cniVersion"].clone();
        if let Some(caps) = c.get("capabilities").and_then(Value::as_object).cloned() {
            let mut rc = serde_json::Map::new();
            for (cap, on) in caps {
                if on == json!(true)
                    && let Some(v) = self.runtime.get(&cap)
                {
                    rc.insert(cap, v.clone());
                }
            }
            if !rc.is_empty() {
                c["runtimeConfig"] = Value::Object(rc);
            }
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn add(&self, cid: &str, ns: &Netns) -> Value {
        let mut prev: Option<Value> = None;
        for (i, plugin) in self.plugins.iter().enumerate() {
            let out = plugin.run(
                "ADD",
                cid,
                ns.path_str(),
                "eth0",
                &self.config(i, prev.as_ref()),
            );
            assert!(
                out.success(),
                "ADD {}: {out}",
                self.list["plugins"][i]["type"]
            );
            prev = Some(out.json());
        }
        prev.expect("a result")
    }

    fn check(&self, cid: &str, ns: &Netns, cached: &Value) -> Result<(), String> {
        for (i, plugin) in self.plugins.iter().enumerate() {
            let out = plugin.run(
                "CHECK",
                cid,
                ns.path_str(),
                "eth0",
                &self.config(i, Some(cached)),
            );
            if !out.success() {
                return Err(format!("CHECK {}: {out}", self.list["plugins"][i]["type"]));
            }
        }
        Ok(())
    }

    fn del(&self, cid: &str, ns: &Netns, cached: &Value) {
        for (i, plugin) in self.plugins.iter().enumerate().rev() {
            let out = plugin.run(
                "DEL",
                cid,
                ns.path_str(),
                "eth0",
                &self.config(i, Some(cached)),
            );
            assert!(
                out.success(),
                "DEL {}: {out}",
                self.list["plugins"][i]["type"]
            );
        }
        let _ = self.host;
    }
}

fn podman_chain(version: &str) {
    let wanted = ["bridge", "portmap", "firewall", "tuning"];
    let have = applets();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|a| !have.iter().any(|h| h == a))
        .collect();
    if !missing.is_empty() {
        skip("podman chain", &format!("no applet for {missing:?} yet"));
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("pc-h");
    let list = conflist(&host, version, &wanted);
    let web = Driver::new(
        &dir,
        &host,
        list.clone(),
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    let client = Driver::new(&dir, &host, list, json!({}));
    let (a, b) = (Netns::new("pc-a"), Netns::new("pc-b"));
    let ra = web.add("ctr-web", &a);
    let rb = client.add("ctr-cli", &b);
    assert_eq!(ra["cniVersion"], version);
    let ifaces = ra["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces[0]["name"], "cni-podman0", "{ra}");
    assert_eq!(ra["ips"][0]["gateway"], "10.88.0.1", "{ra}");

    a.ip(&["link", "set", "lo", "up"]);
    let _server = WebServer::start(&a.name, "podman web");
    assert!(
        fetch(&a.name, "http://127.0.0.1/", 10).is_some(),
        "server up"
    );
    for url in ["http://127.0.0.1:8080/", "http://10.88.0.1:8080/"] {
        assert_eq!(
            fetch(&host.ns.name, url, 10).as_deref(),
            Some("podman web"),
            "{version}: host -> {url}"
        );
    }
    assert_eq!(
        fetch(&b.name, "http://10.88.0.1:8080/", 10).as_deref(),
        Some("podman web"),
        "{version}: hairpin from the second container"
    );
    let rules = filter_and_nat(&host);
    assert!(rules.contains("CNI-DN-"), "{rules}");
    let ip_a = result_addresses(&ra)[0].clone();
    assert!(
        rules.contains(&format!("-s {ip_a}/32 -j ACCEPT")),
        "{rules}"
    );

    web.check("ctr-web", &a, &ra).unwrap();
    client.check("ctr-cli", &b, &rb).unwrap();

    web.del("ctr-web", &a, &ra);
    assert!(fetch(&host.ns.name, "http://127.0.0.1:8080/", 1).is_none());
    assert!(
        web.check("ctr-web", &a, &ra).is_err(),
        "CHECK fails after DEL"
    );
    client.del("ctr-cli", &b, &rb);
    let rules = filter_and_nat(&host);
    assert!(!rules.contains("CNI-DN-"), "{rules}");
    assert!(
        !rules.contains("10.88.0."),
        "no per-container rule left:\n{rules}"
    );
    assert!(host.reservations("podman").is_empty());
    assert!(host.links_named("veth").is_empty());
    // A second DEL of the whole chain (runtimes retry) is fine.
    web.del("ctr-web", &a, &ra);
}

fn filter_and_nat(host: &Host) -> String {
    let mut text = host.nat_rules();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = host.exec(&[tool, "-t", "filter"]);
        text += &String::from_utf8_lossy(&out.stdout);
    }
    text
}

#[test]
fn podman_default_network_at_spec_0_4_0() {
    podman_chain("0.4.0");
}

#[test]
fn podman_default_network_at_spec_1_0_0() {
    podman_chain("1.0.0");
}
