//! Helpers for the tests of the chained plugins (bandwidth, tuning, sbr, vrf, firewall,
//! portmap): a host namespace with a veth pair into a container namespace, a synthetic
//! `prevResult`, and a chain after our ptp.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::*;
use super::plugin_env::*;

/// A host namespace `<tag>-h` with a veth pair `hv0` <-> `eth0` into a container namespace
/// `<tag>-c`. Each test file adds its own constructor and inspectors in an `impl Pair`.
pub struct Pair {
    pub host: Host,
    pub ctr: Netns,
}

impl Pair {
    /// Makes the pair (`link_opts`, e.g. `mtu 1400`, go to `ip link add`), then runs
    /// `host_cmds` with `ip` in the host namespace and `ctr_cmds` in the container.
    pub fn setup(
        tag: &str,
        link_opts: &[&str],
        host_cmds: &[&[&str]],
        ctr_cmds: &[&[&str]],
    ) -> Pair {
        let host = Host::new(&format!("{tag}-h"));
        let ctr = Netns::new(&format!("{tag}-c"));
        let mut add = vec!["link", "add", "hv0"];
        add.extend_from_slice(link_opts);
        add.extend_from_slice(&["type", "veth", "peer", "name", "eth0", "netns", &ctr.name]);
        host.ns.ip(&add);
        for args in host_cmds {
            host.ns.ip(args);
        }
        for args in ctr_cmds {
            ctr.ip(args);
        }
        let pair = Pair { host, ctr };
        pair.wait_for_link_local_route();
        pair
    }

    /// The kernel adds `eth0`'s IPv6 link-local route a moment after the link comes up (long
    /// moments under the VM lane's emulation); plugins run after a main plugin that waited.
    fn wait_for_link_local_route(&self) {
        let has_route = || {
            ip_json(&self.ctr.name, &["-6", "route", "show", "dev", "eth0"])
                .as_array()
                .is_some_and(|routes| routes.iter().any(|r| r["dst"] == "fe80::/64"))
        };
        let link_up = ip_json(&self.ctr.name, &["link", "show", "eth0"])[0]["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|f| f == "UP"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while link_up && !has_route() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CNI_NETNS of the container.
    pub fn netns(&self) -> &str {
        self.ctr.path_str()
    }

    /// ADD of `ctr-d` with `conf` on `eth0`, for a differential run: the result without an
    /// empty `dns` (Debian's Go v1.1.1 prints one) and with the sandbox `SANDBOX`.
    pub fn diff_add(&self, plugin: &Plugin, conf: &Value) -> Value {
        let add = plugin.run("ADD", "ctr-d", self.netns(), "eth0", conf);
        add.assert_success();
        let mut result = add.json();
        if result["dns"] == json!({}) {
            result.as_object_mut().unwrap().remove("dns");
        }
        result["interfaces"][1]["sandbox"] = json!("SANDBOX");
        result
    }

    /// Deletes the container namespace; returns the host and the path the namespace had.
    pub fn without_ctr(self) -> (Host, String) {
        let path = self.netns().to_string();
        drop(self.ctr);
        (self.host, path)
    }
}

/// A synthetic prevResult for `version`: `ips` on the sandboxed `eth0` (interface 1), behind
/// the host interface `host_if` (no kernel state needed); the legacy `ip4`/`ip6` before 0.3.0.
pub fn synthetic_prev(version: &str, ips: &[&str], host_if: &str) -> Value {
    if version < "0.3.0" {
        let mut r = json!({"cniVersion": version, "dns": {}});
        for ip in ips {
            let key = if ip.contains(':') { "ip6" } else { "ip4" };
            r[key] = json!({"ip": ip});
        }
        return r;
    }
    let list: Vec<Value> = ips
        .iter()
        .map(|ip| {
            let mut v = json!({"address": ip, "interface": 1});
            if version < "1.0.0" {
                v["version"] = json!(if ip.contains(':') { "6" } else { "4" });
            }
            v
        })
        .collect();
    let mut r = json!({
        "cniVersion": version,
        "interfaces": [{"name": host_if}, {"name": "eth0", "sandbox": "/run/netns/none"}],
        "ips": list,
    });
    if version < "1.0.0" {
        r["dns"] = json!({});
    }
    r
}

/// Our ptp and the plugin under test in one host namespace `<tag>-h`, with one container
/// `<tag>-c`; attachments have the container ID `ctr-p`.
pub struct PtpChain {
    pub host: Host,
    pub ctr: Netns,
    pub ptp: Plugin,
    pub plugin: Plugin,
    pub dir: AppletDir,
}

impl PtpChain {
    /// The chain, or None (reported as a SKIP) when cnibox has no ptp applet.
    pub fn new(tag: &str, plugin: &str) -> Option<PtpChain> {
        if !applets().iter().any(|a| a == "ptp") {
            skip("the ptp chain", "cnibox has no ptp applet");
            return None;
        }
        let dir = AppletDir::new();
        let host = Host::new(&format!("{tag}-h"));
        let ctr = Netns::new(&format!("{tag}-c"));
        let ptp = Plugin::ours(&dir, &host, "ptp");
        let plugin = Plugin::ours(&dir, &host, plugin);
        Some(PtpChain {
            host,
            ctr,
            ptp,
            plugin,
            dir,
        })
    }

    /// ptp ADD of `ifname` with `conf`, asserting success; returns the result.
    pub fn ptp_add(&self, ifname: &str, conf: &Value) -> Value {
        let add = self
            .ptp
            .run("ADD", "ctr-p", self.ctr.path_str(), ifname, conf);
        add.assert_success();
        add.json()
    }

    /// ptp DEL of `ifname` (with its ADD result `prev`), asserting success.
    pub fn ptp_del(&self, ifname: &str, conf: &Value, prev: &Value) {
        self.ptp
            .run_with_prev("DEL", ("ctr-p", self.ctr.path_str(), ifname), conf, prev);
    }
}

/// `busybox httpd` on port 80 in namespace `ns`, serving `marker` as its index page; killed
/// on drop.
pub struct WebServer {
    child: Child,
    dir: std::path::PathBuf,
}

impl WebServer {
    pub fn start(ns: &str, marker: &str) -> WebServer {
        let dir = std::env::temp_dir().join(format!("cnibox-www-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), marker).unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        WebServer { child, dir }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `wget` from `ns`; a few attempts while the server starts.
pub fn fetch(ns: &str, url: &str, attempts: usize) -> Option<String> {
    for _ in 0..attempts {
        let out = exec_in(
            ns,
            &["timeout", "3", "busybox", "wget", "-q", "-O", "-", url],
        );
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// One quick attempt, for "must not work" checks.
pub fn fetch_once(ns: &str, url: &str) -> bool {
    exec_in(
        ns,
        &["timeout", "3", "busybox", "wget", "-q", "-O", "-", url],
    )
    .status
    .success()
}
