//! The firewall plugin's firewalld backend: a minimal D-Bus client (no crate, no libdbus)
//! that speaks just enough of the protocol for the reference's calls: connect to the system
//! bus socket, authenticate with `EXTERNAL` (our uid), `Hello`, then method calls with string
//! arguments whose replies carry a string or a boolean, or an error.
//!
//! * detection: `org.freedesktop.DBus.GetNameOwner("org.fedoraproject.FirewallD1")` answers;
//! * ADD: `org.fedoraproject.FirewallD1.zone.addSource(zone, ip/32)`, `ZONE_ALREADY_SET`
//!   tolerated; DEL: `removeSource` (failures ignored); CHECK: `querySource`.
//!
//! The bus is `DBUS_SYSTEM_BUS_ADDRESS` (`unix:path=...` only) or
//! `/run/dbus/system_bus_socket`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::cni::{CniError, CniResult};

pub const FIREWALLD_NAME: &str = "org.fedoraproject.FirewallD1";
const FIREWALLD_PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_INTERFACE: &str = "org.fedoraproject.FirewallD1.zone";
const DBUS_NAME: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const DEFAULT_SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SENDER: u8 = 7;
const FIELD_SIGNATURE: u8 = 8;

/// Why a D-Bus exchange failed.
#[derive(Debug)]
pub enum DbusError {
    /// The bus could not be reached or spoke nonsense.
    Transport(String),
    /// The peer answered with an error message.
    Remote { name: String, message: String },
}

impl std::fmt::Display for DbusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbusError::Transport(text) => f.write_str(text),
            DbusError::Remote { name, message } if message.is_empty() => f.write_str(name),
            DbusError::Remote { name, message } => write!(f, "{name}: {message}"),
        }
    }
}

fn transport(what: &str, e: impl std::fmt::Display) -> DbusError {
    DbusError::Transport(format!("{what}: {e}"))
}

/// The system bus socket to use.
pub fn system_bus_path() -> PathBuf {
    if let Ok(address) = std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        for part in address.split(';') {
            if let Some(rest) = part.strip_prefix("unix:") {
                for kv in rest.split(',') {
                    if let Some(path) = kv.strip_prefix("path=") {
                        return PathBuf::from(path);
                    }
                }
            }
        }
    }
    PathBuf::from(DEFAULT_SYSTEM_BUS)
}

/// A decoded message, as far as this client needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub path: String,
    pub interface: String,
    pub member: String,
    pub error_name: String,
    pub sender: String,
    pub signature: String,
    /// The body's string arguments and booleans (as "true"/"false"), in order.
    pub args: Vec<String>,
}

/// One argument of a message body.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Str(&'a str),
    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    Bool(bool),
    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    U32(u32),
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, to: usize) {
        while !self.buf.len().is_multiple_of(to) {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend(v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend(s.as_bytes());
        self.buf.push(0);
    }

    fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend(s.as_bytes());
        self.buf.push(0);
    }

    fn field(&mut self, code: u8, sig: &str, value: &str) {
        self.pad(8);
        self.buf.push(code);
        self.signature(sig);
        match sig {
            "g" => self.signature(value),
            "u" => self.u32(value.parse().unwrap_or(0)),
            _ => self.string(value),
        }
    }
}

/// Encodes a message (little endian). `fields` are `(code, signature, value)`.
fn encode(kind: u8, serial: u32, fields: &[(u8, &str, String)], args: &[Arg]) -> Vec<u8> {
    let mut body = Writer { buf: Vec::new() };
    let mut sig = String::new();
    for arg in args {
        match arg {
            Arg::Str(s) => {
                sig.push('s');
                body.string(s);
            }
            Arg::Bool(b) => {
                sig.push('b');
                body.u32(u32::from(*b));
            }
            Arg::U32(v) => {
                sig.push('u');
                body.u32(*v);
            }
        }
    }
    let mut w = Writer { buf: Vec::new() };
    w.buf.extend([b'l', kind, 0, 1]);
    w.buf.extend((body.buf.len() as u32).to_le_bytes());
    w.buf.extend(serial.to_le_bytes());
    let mut fields_w = Writer { buf: Vec::new() };
    for (code, fsig, value) in fields {
        fields_w.field(*code, fsig, value);
    }
    if !sig.is_empty() {
        fields_w.field(FIELD_SIGNATURE, "g", &sig);
    }
    // The array starts at offset 16, which is 8-aligned, so its inner padding holds.
    w.buf.extend((fields_w.buf.len() as u32).to_le_bytes());
    w.buf.extend(fields_w.buf);
    w.pad(8);
    w.buf.extend(body.buf);
    w.buf
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl Reader<'_> {
    fn align(&mut self, to: usize) {
        self.pos = self.pos.div_ceil(to) * to;
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let out = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.align(4);
        let big = self.big;
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let s = String::from_utf8_lossy(self.take(len)?).into_owned();
        self.take(1)?;
        Some(s)
    }

    fn signature(&mut self) -> Option<String> {
        let len = self.u8()? as usize;
        let s = String::from_utf8_lossy(self.take(len)?).into_owned();
        self.take(1)?;
        Some(s)
    }

    /// Skips or reads one value of a basic type; `None` for types this client does not know.
    fn value(&mut self, sig: char) -> Option<Option<String>> {
        Some(match sig {
            's' | 'o' => Some(self.string()?),
            'g' => Some(self.signature()?),
            'u' | 'i' => Some(self.u32()?.to_string()),
            'b' => Some((self.u32()? != 0).to_string()),
            'y' => Some(self.u8()?.to_string()),
            _ => return None,
        })
    }
}

/// The length of the message that starts `head` (its first 16 bytes).
fn total_length(head: &[u8; 16]) -> usize {
    let big = head[0] == b'B';
    let word = |at: usize| {
        let b = [head[at], head[at + 1], head[at + 2], head[at + 3]];
        (if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }) as usize
    };
    let fields_end = 16 + word(12);
    fields_end.div_ceil(8) * 8 + word(4)
}

/// Decodes a complete message.
fn decode(buf: &[u8]) -> Option<Message> {
    let big = *buf.first()? == b'B';
    let mut r = Reader { buf, pos: 1, big };
    let mut msg = Message {
        kind: r.u8()?,
        ..Message::default()
    };
    r.take(2)?;
    let body_len = r.u32()? as usize;
    msg.serial = r.u32()?;
    let fields_len = r.u32()? as usize;
    let fields_end = r.pos + fields_len;
    while r.pos < fields_end {
        r.align(8);
        let code = r.u8()?;
        let sig = r.signature()?;
        let value = r.value(sig.chars().next()?)?.unwrap_or_default();
        match code {
            FIELD_PATH => msg.path = value,
            FIELD_INTERFACE => msg.interface = value,
            FIELD_MEMBER => msg.member = value,
            FIELD_ERROR_NAME => msg.error_name = value,
            FIELD_REPLY_SERIAL => msg.reply_serial = value.parse().ok(),
            FIELD_SENDER => msg.sender = value,
            FIELD_SIGNATURE => msg.signature = value,
            _ => {}
        }
    }
    r.align(8);
    let body = buf.get(r.pos..r.pos + body_len)?;
    let mut b = Reader {
        buf: body,
        pos: 0,
        big,
    };
    for c in msg.signature.clone().chars() {
        match b.value(c)? {
            Some(v) => msg.args.push(v),
            None => break,
        }
    }
    Some(msg)
}

/// A connection to a bus.
pub struct Bus {
    stream: BufReader<UnixStream>,
    serial: u32,
}

impl Bus {
    /// Connects to the system bus and says Hello.
    pub fn system() -> Result<Bus, DbusError> {
        Bus::connect(&system_bus_path())
    }

    pub fn connect(path: &std::path::Path) -> Result<Bus, DbusError> {
        let what = format!("connecting to the D-Bus system bus at {}", path.display());
        let stream = UnixStream::connect(path).map_err(|e| transport(&what, e))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| transport(&what, e))?;
        let mut bus = Bus {
            stream: BufReader::new(stream),
            serial: 0,
        };
        bus.authenticate().map_err(|e| transport(&what, e))?;
        bus.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, "Hello", &[])?;
        Ok(bus)
    }

    fn authenticate(&mut self) -> io::Result<()> {
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let out = self.stream.get_mut();
        out.write_all(b"\0")?;
        out.write_all(format!("AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if !line.starts_with("OK ") {
            return Err(io::Error::other(format!(
                "authentication refused: {}",
                line.trim_end()
            )));
        }
        self.stream.get_mut().write_all(b"BEGIN\r\n")
    }

    fn next_serial(&mut self) -> u32 {
        self.serial += 1;
        self.serial
    }

    /// Sends a message; returns its serial.
    pub fn send(
        &mut self,
        kind: u8,
        fields: &[(u8, &str, String)],
        args: &[Arg],
    ) -> io::Result<u32> {
        let serial = self.next_serial();
        let bytes = encode(kind, serial, fields, args);
        self.stream.get_mut().write_all(&bytes)?;
        Ok(serial)
    }

    /// Reads the next message.
    pub fn receive(&mut self) -> Result<Message, DbusError> {
        let mut head = [0u8; 16];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| transport("reading from the bus", e))?;
        let total = total_length(&head);
        if total > 1 << 27 {
            return Err(DbusError::Transport("message too long".into()));
        }
        let mut buf = head.to_vec();
        buf.resize(total, 0);
        self.stream
            .read_exact(&mut buf[16..])
            .map_err(|e| transport("reading from the bus", e))?;
        decode(&buf).ok_or_else(|| DbusError::Transport("malformed message from the bus".into()))
    }

    /// Calls a method and waits for its reply (signals and other messages are skipped).
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[Arg],
    ) -> Result<Message, DbusError> {
        let fields = [
            (FIELD_PATH, "o", path.to_string()),
            (FIELD_INTERFACE, "s", interface.to_string()),
            (FIELD_MEMBER, "s", member.to_string()),
            (FIELD_DESTINATION, "s", destination.to_string()),
        ];
        let serial = self
            .send(METHOD_CALL, &fields, args)
            .map_err(|e| transport("writing to the bus", e))?;
        loop {
            let msg = self.receive()?;
            if msg.reply_serial != Some(serial) {
                continue;
            }
            return match msg.kind {
                METHOD_RETURN => Ok(msg),
                ERROR => Err(DbusError::Remote {
                    name: msg.error_name.clone(),
                    message: msg.args.first().cloned().unwrap_or_default(),
                }),
                _ => continue,
            };
        }
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    /// Answers a method call (for a service; used by the tests' fake firewalld).
    pub fn reply(&mut self, to: &Message, args: &[Arg]) -> io::Result<u32> {
        let fields = [
            (FIELD_REPLY_SERIAL, "u", to.serial.to_string()),
            (FIELD_DESTINATION, "s", to.sender.clone()),
        ];
        self.send(METHOD_RETURN, &fields, args)
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    /// Answers a method call with an error.
    pub fn reply_error(&mut self, to: &Message, name: &str, text: &str) -> io::Result<u32> {
        let fields = [
            (FIELD_ERROR_NAME, "s", name.to_string()),
            (FIELD_REPLY_SERIAL, "u", to.serial.to_string()),
            (FIELD_DESTINATION, "s", to.sender.clone()),
        ];
        self.send(ERROR, &fields, &[Arg::Str(text)])
    }
}

/// The reference's detection: a system bus on which firewalld's name has an owner.
pub fn is_running() -> bool {
    let Ok(mut bus) = Bus::system() else {
        return false;
    };
    firewalld_owner(&mut bus).is_ok()
}

/// Asks the bus which connection owns firewalld's name (an error when none does).
fn firewalld_owner(bus: &mut Bus) -> Result<Message, DbusError> {
    bus.call(
        DBUS_NAME,
        DBUS_PATH,
        DBUS_NAME,
        "GetNameOwner",
        &[Arg::Str(FIREWALLD_NAME)],
    )
}

/// A connection to firewalld, failing with a message that names what is missing.
pub struct Firewalld {
    bus: Bus,
}

impl Firewalld {
    pub fn connect() -> CniResult<Firewalld> {
        Firewalld::connect_to(&system_bus_path())
    }

    pub fn connect_to(path: &std::path::Path) -> CniResult<Firewalld> {
        let mut bus = Bus::connect(path).map_err(|e| {
            CniError::internal(format!(
                "firewalld backend: the D-Bus system bus is not available ({e}); \
                 is dbus running, and firewalld ({FIREWALLD_NAME}) started?"
            ))
        })?;
        firewalld_owner(&mut bus).map_err(|e| {
            CniError::internal(format!(
                "firewalld backend: firewalld ({FIREWALLD_NAME}) is not running on the D-Bus \
                 system bus at {}: {e}",
                path.display()
            ))
        })?;
        Ok(Firewalld { bus })
    }

    fn zone_call(&mut self, member: &str, zone: &str, source: &str) -> Result<Message, DbusError> {
        self.bus.call(
            FIREWALLD_NAME,
            FIREWALLD_PATH,
            ZONE_INTERFACE,
            member,
            &[Arg::Str(zone), Arg::Str(source)],
        )
    }

    pub fn add_source(&mut self, zone: &str, source: &str) -> CniResult<()> {
        match self.zone_call("addSource", zone, source) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("ZONE_ALREADY_SET") => Ok(()),
            Err(e) => Err(CniError::internal(format!(
                "failed to add the address {source} to {zone} zone: {e}"
            ))),
        }
    }

    pub fn remove_source(&mut self, zone: &str, source: &str) {
        if let Err(e) = self.zone_call("removeSource", zone, source) {
            tracing::debug!("ignoring: removing {source} from zone {zone}: {e}");
        }
    }

    /// Unlike the reference (which only fails when the call fails), a `false` answer fails.
    pub fn query_source(&mut self, zone: &str, source: &str) -> CniResult<()> {
        let missing = || {
            CniError::internal(format!(
                "failed to find the address {source} in {zone} zone"
            ))
        };
        let reply = self
            .zone_call("querySource", zone, source)
            .map_err(|_| missing())?;
        if reply.args.first().map(String::as_str) == Some("true") {
            Ok(())
        } else {
            Err(missing())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    #[test]
    fn dbus_messages_round_trip() {
        let fields = [
            (FIELD_PATH, "o", FIREWALLD_PATH.to_string()),
            (FIELD_MEMBER, "s", "addSource".to_string()),
            (FIELD_REPLY_SERIAL, "u", "7".to_string()),
        ];
        let bytes = encode(
            METHOD_CALL,
            3,
            &fields,
            &[Arg::Str("trusted"), Arg::Bool(true)],
        );
        assert_eq!(&bytes[..4], &[b'l', 1, 0, 1]);
        let head: [u8; 16] = bytes[..16].try_into().unwrap();
        assert_eq!(total_length(&head), bytes.len());
        let msg = decode(&bytes).unwrap();
        assert_eq!(msg.serial, 3);
        assert_eq!(msg.path, FIREWALLD_PATH);
        assert_eq!(msg.member, "addSource");
        assert_eq!(msg.reply_serial, Some(7));
        assert_eq!(msg.signature, "sb");
        assert_eq!(msg.args, ["trusted", "true"]);
        assert!(decode(&bytes[..20]).is_none());
    }

    #[test]
    fn dbus_system_bus_address() {
        // Only the parsing; the variable is not set in this process.
        assert!(system_bus_path().is_absolute());
    }

    struct Daemon {
        child: Child,
        dir: PathBuf,
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A private dbus-daemon (session configuration) on a socket of our own.
    fn private_bus() -> Option<(Daemon, PathBuf)> {
        let dir = std::env::temp_dir().join(format!("cnibox-dbus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let socket = dir.join("bus");
        let child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let daemon = Daemon { child, dir };
        for _ in 0..100 {
            if socket.exists() {
                return Some((daemon, socket));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn dbus_fake_firewalld_through_a_real_dbus_daemon() {
        let Some((_daemon, socket)) = private_bus() else {
            eprintln!("SKIP: no dbus-daemon to test against");
            return;
        };
        let mut client = Bus::connect(&socket).unwrap();
        // Nobody owns the name yet: what detection sees on a node without firewalld.
        let absent = client.call(
            DBUS_NAME,
            DBUS_PATH,
            DBUS_NAME,
            "GetNameOwner",
            &[Arg::Str(FIREWALLD_NAME)],
        );
        match absent {
            Err(DbusError::Remote { name, .. }) => {
                assert_eq!(name, "org.freedesktop.DBus.Error.NameHasNoOwner")
            }
            other => panic!("{other:?}"),
        }
        let gone = Firewalld::connect_to(&socket.with_extension("none"))
            .err()
            .unwrap();
        assert!(
            gone.msg.contains("D-Bus system bus is not available"),
            "{gone}"
        );
        let idle = Firewalld::connect_to(&socket).err().unwrap();
        assert!(idle.msg.contains("is not running"), "{idle}");
        let mut service = Bus::connect(&socket).unwrap();
        let owned = service
            .call(
                DBUS_NAME,
                DBUS_PATH,
                DBUS_NAME,
                "RequestName",
                &[Arg::Str(FIREWALLD_NAME), Arg::U32(0)],
            )
            .unwrap();
        assert_eq!(owned.args, ["1"], "primary owner");
        let server = std::thread::spawn(move || {
            let mut zones: Vec<(String, String)> = Vec::new();
            loop {
                let Ok(msg) = service.receive() else { return };
                if msg.kind != METHOD_CALL || msg.interface != ZONE_INTERFACE {
                    continue;
                }
                let pair = (msg.args[0].clone(), msg.args[1].clone());
                match msg.member.as_str() {
                    "addSource" if zones.contains(&pair) => {
                        let text = format!("ZONE_ALREADY_SET: {}", pair.1);
                        let name = "org.fedoraproject.FirewallD1.Exception";
                        service.reply_error(&msg, name, &text).unwrap();
                    }
                    "addSource" => {
                        zones.push(pair.clone());
                        service.reply(&msg, &[Arg::Str(&pair.0)]).unwrap();
                    }
                    "querySource" => {
                        let found = zones.contains(&pair);
                        service.reply(&msg, &[Arg::Bool(found)]).unwrap();
                    }
                    "removeSource" => {
                        zones.retain(|z| *z != pair);
                        service.reply(&msg, &[Arg::Str(&pair.0)]).unwrap();
                        if pair.1 == "stop" {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut fw = Firewalld::connect_to(&socket).unwrap();
        fw.add_source("trusted", "10.88.0.5/32").unwrap();
        fw.add_source("trusted", "10.88.0.5/32").unwrap();
        fw.query_source("trusted", "10.88.0.5/32").unwrap();
        let other_zone = fw.query_source("public", "10.88.0.5/32").unwrap_err();
        assert_eq!(
            other_zone.msg,
            "failed to find the address 10.88.0.5/32 in public zone"
        );
        fw.remove_source("trusted", "10.88.0.5/32");
        assert!(fw.query_source("trusted", "10.88.0.5/32").is_err());
        fw.remove_source("trusted", "stop");
        server.join().unwrap();
    }
}
