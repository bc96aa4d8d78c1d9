//! `host-local <command>`: the operator's view of the store, when the binary is run with
//! arguments and no CNI_COMMAND.
//!
//!   host-local leases  [--data-dir D] [--network N] [--json]
//!   host-local release --network N [--data-dir D] IP
//!   host-local gc      --network N [--data-dir D] [--older-than DURATION]
//!   host-local metrics [--data-dir D] [--network N] [--conf-dir C]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use libcni::ip::{go_ip_string, serialize_go_ip};
use libcni::json;
use libcni::{Context, Error, Result};
use serde::{Serialize, Serializer};

use crate::config::{parse_duration, DEFAULT_DATA_DIR};
use crate::disk::{DiskStore, Prepare};
use crate::metrics::{configuration, Metrics};
use crate::store::{rfc3339, unix_now, PodRecord, Query, Store};

const USAGE: &str = "\
host-local: the host-local CNI IPAM plugin (runtimes call it with CNI_COMMAND set).
Run with a command, it inspects and maintains the lease store:

  host-local leases  [--data-dir DIR] [--network NAME] [--json]
      list every address: active leases and addresses held for a pod
  host-local release --network NAME [--data-dir DIR] IP
      free an address held for a pod (not one in use)
  host-local gc      --network NAME [--data-dir DIR] [--older-than DURATION]
      free held addresses, or only those held longer than DURATION (e.g. 72h)
  host-local metrics [--data-dir DIR] [--network NAME] [--conf-dir CONFDIR]
      each network's pool in the Prometheus text format

DIR defaults to /var/lib/cni/networks; each network's store is DIR/NAME.
`host-local COMMAND --help` describes one command.
";

const LEASES_HELP: &str = "\
host-local leases [--data-dir DIR] [--network NAME] [--json]

Lists every address of every network under DIR (default /var/lib/cni/networks), or of
NAME only, as an aligned table or, with --json, as an array of objects with the fields
ip, network, containerId, ifname, podNamespace, podName, state (\"active\" or \"held\")
and since (RFC 3339). State written by upstream host-local is read too; what it does not
record (the pod) is empty, and `since` is then the lease file's modification time.
";

const RELEASE_HELP: &str = "\
host-local release --network NAME [--data-dir DIR] IP

Frees IP if it is held for a pod whose sandbox is gone (see `host-local leases`). An
address in use by a sandbox is refused: delete the pod instead. An OpenYurt marker for
IP is removed too.
";

const GC_HELP: &str = "\
host-local gc --network NAME [--data-dir DIR] [--older-than DURATION]

Frees every address held for a pod, or with --older-than only those held for longer than
DURATION (e.g. 90m, 72h, 7d). Leases in use are never touched. Prints what was freed.
";

const METRICS_HELP: &str = "\
host-local metrics [--data-dir DIR] [--network NAME] [--conf-dir CONFDIR]

Prints, in the Prometheus text format, for every network under DIR (default
/var/lib/cni/networks) or for NAME only, and each of its range sets: the addresses in
total, active, held and free; how long the oldest hold has been held; and the store's
counters of holds reclaimed, ADDs refused for a full range set, and crash debris removed.
The ranges come from the network's configuration in CONFDIR (default /etc/cni/net.d);
without one, only active and held addresses are reported (range_set=\"unknown\").
";

/// One row of `host-local leases`; `--json` writes its fields in this order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    #[serde(serialize_with = "serialize_go_ip")]
    ip: IpAddr,
    network: String,
    container_id: String,
    ifname: String,
    pod_namespace: String,
    pod_name: String,
    state: &'static str,
    #[serde(serialize_with = "serialize_rfc3339")]
    since: u64,
}

fn serialize_rfc3339<S: Serializer>(unix_seconds: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*unix_seconds))
}

#[derive(Default)]
struct Options {
    data_dir: Option<PathBuf>,
    network: Option<String>,
    json: bool,
    older_than: Option<String>,
    conf_dir: Option<PathBuf>,
    help: bool,
    positional: Vec<String>,
}

fn parse_options(args: &[String]) -> std::result::Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--data-dir" => o.data_dir = Some(value("--data-dir")?.into()),
            "--network" => o.network = Some(value("--network")?),
            "--older-than" => o.older_than = Some(value("--older-than")?),
            "--conf-dir" => o.conf_dir = Some(value("--conf-dir")?.into()),
            "--json" => o.json = true,
            "-h" | "--help" => o.help = true,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            other => o.positional.push(other.to_string()),
        }
    }
    Ok(o)
}

/// Run an admin command; `args` excludes the program name. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    let help = match command {
        "leases" => LEASES_HELP,
        "release" => RELEASE_HELP,
        "gc" => GC_HELP,
        "metrics" => METRICS_HELP,
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            return 0;
        }
        other => {
            eprint!("host-local: unknown command {other:?}\n\n{USAGE}");
            return 2;
        }
    };
    let opts = match parse_options(rest) {
        Ok(o) if o.help => {
            print!("{help}");
            return 0;
        }
        Ok(o) => o,
        Err(e) => {
            eprint!("host-local {command}: {e}\n\n{help}");
            return 2;
        }
    };
    let outcome = match command {
        "leases" => leases(&opts),
        "release" => release(&opts),
        "metrics" => metrics(&opts),
        _ => gc(&opts),
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("host-local {command}: {}", e.msg);
            1
        }
    }
}

fn data_dir(opts: &Options) -> PathBuf {
    opts.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into())
}

/// An existing network store; the admin commands never create one.
fn open_network(data_dir: &Path, network: &str) -> Result<DiskStore> {
    libcni::validate::network_name(network)?;
    let dir = data_dir.join(network);
    if !dir.is_dir() {
        return Err(Error::config(format!("no network {network:?} in {}", data_dir.display())));
    }
    let mut store = DiskStore::open(&dir, Prepare::default())?;
    store.refresh()?;
    Ok(store)
}

fn rows_of(store: &DiskStore, network: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = store
        .find(Query::All)
        .into_iter()
        .map(|lease| {
            let pod = lease.pod.as_ref();
            Row {
                ip: lease.ip,
                network: network.to_string(),
                container_id: lease.container_id().to_string(),
                ifname: lease.ifname().unwrap_or("").to_string(),
                pod_namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
                pod_name: pod.map(|p| p.name.clone()).unwrap_or_default(),
                state: if lease.is_held() { "held" } else { "active" },
                since: pod.map(|p| p.since).or_else(|| store.written_at(lease.ip)).unwrap_or(0),
            }
        })
        .collect();
    // OpenYurt markers without a lease: addresses held for a pod.
    for m in store.markers().iter().filter(|m| store.lease(m.ip).is_none()) {
        rows.push(Row {
            ip: m.ip,
            network: network.to_string(),
            container_id: String::new(),
            ifname: String::new(),
            pod_namespace: m.namespace.clone(),
            pod_name: m.name.clone(),
            state: "held",
            since: m.since,
        });
    }
    rows.sort_by_key(|r| (r.ip.is_ipv6(), libcni::ip::ip_to_u128(r.ip)));
    rows
}

/// `network`, or every network that has a store under `dir`.
fn networks(dir: &Path, network: Option<&str>) -> Result<Vec<String>> {
    if let Some(n) = network {
        return Ok(vec![n.to_string()]);
    }
    let entries = std::fs::read_dir(dir).ctx("read", dir.display())?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| libcni::validate::network_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

fn leases(opts: &Options) -> Result<String> {
    let dir = data_dir(opts);
    let networks = networks(&dir, opts.network.as_deref())?;
    let mut rows = Vec::new();
    for network in &networks {
        let mut store = open_network(&dir, network)?;
        rows.extend(rows_of(&store, network));
        // Reading the directory may have removed crash debris: count it, refresh the index.
        store.commit()?;
    }
    if opts.json {
        return Ok(json::to_go_pretty(&rows) + "\n");
    }
    let header = ["IP", "NETWORK", "STATE", "NAMESPACE", "POD", "CONTAINER", "IFNAME", "SINCE"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                go_ip_string(r.ip),
                r.network.clone(),
                r.state.to_string(),
                r.pod_namespace.clone(),
                r.pod_name.clone(),
                r.container_id.clone(),
                r.ifname.clone(),
                rfc3339(r.since),
            ]
        })
        .collect();
    let widths: Vec<usize> =
        (0..8).map(|i| cells.iter().map(|c| c[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |fields: Vec<&str>| {
        let padded: Vec<String> = fields.iter().zip(&widths).map(|(f, w)| format!("{f:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for c in &cells {
        out += &line(c.iter().map(String::as_str).collect());
    }
    Ok(out)
}

fn network_of(opts: &Options) -> Result<&str> {
    opts.network.as_deref().ok_or_else(|| Error::config("--network NAME is required"))
}

fn release(opts: &Options) -> Result<String> {
    let network = network_of(opts)?;
    let [ip] = opts.positional.as_slice() else {
        return Err(Error::config("exactly one IP to release is required"));
    };
    let ip: IpAddr = ip.parse().map_err(|_| Error::config(format!("{ip:?} is not an IP address")))?;
    let mut store = open_network(&data_dir(opts), network)?;
    let markers: Vec<_> = store.markers().iter().filter(|m| m.ip == ip).cloned().collect();
    match store.lease(ip) {
        Some(lease) if !lease.is_held() => {
            return Err(Error::config(format!(
                "{} is in use by container {} (not held): delete the pod instead",
                go_ip_string(ip),
                lease.container_id()
            )))
        }
        Some(_) => store.release(ip)?,
        None if markers.is_empty() => {
            return Err(Error::config(format!("{} is not leased in {network}", go_ip_string(ip))))
        }
        None => {}
    }
    for m in &markers {
        store.remove_marker(m)?;
    }
    store.commit()?;
    Ok(format!("released {}\n", go_ip_string(ip)))
}

fn gc(opts: &Options) -> Result<String> {
    let network = network_of(opts)?;
    let min_age = match &opts.older_than {
        None => 0,
        Some(d) => {
            parse_duration(d).ok_or_else(|| Error::config(format!("--older-than: invalid duration {d:?}")))?.as_secs()
        }
    };
    let mut store = open_network(&data_dir(opts), network)?;
    // How long an address has been held is node time (see `clock`): a clock that jumped
    // frees nothing early. OpenYurt markers only have their file time.
    let clock = store.clock()?;
    let held_long_enough = |p: &PodRecord| {
        clock
            .reclaimable_since(p)
            .is_some_and(|since| clock.now().saturating_sub(since) >= min_age.saturating_mul(1_000_000))
    };
    let held: Vec<IpAddr> = store
        .find(Query::Held)
        .into_iter()
        .filter(|l| l.pod.as_ref().is_some_and(held_long_enough))
        .map(|l| l.ip)
        .collect();
    let now = unix_now();
    let markers: Vec<_> = store
        .markers()
        .iter()
        .filter(|m| store.lease(m.ip).is_none() && now.saturating_sub(m.since) >= min_age)
        .cloned()
        .collect();
    let mut out = String::new();
    for ip in held {
        store.release(ip)?;
        out += &format!("released {}\n", go_ip_string(ip));
    }
    for m in markers {
        store.remove_marker(&m)?;
        out += &format!("released {} (OpenYurt marker of {}/{})\n", go_ip_string(m.ip), m.namespace, m.name);
    }
    store.commit()?;
    Ok(out)
}

fn metrics(opts: &Options) -> Result<String> {
    let dir = data_dir(opts);
    let conf_dir = opts.conf_dir.clone().unwrap_or_else(|| "/etc/cni/net.d".into());
    let mut out = Metrics::new();
    for network in networks(&dir, opts.network.as_deref())? {
        let mut store = open_network(&dir, &network)?;
        let conf = configuration(&conf_dir, &network);
        if conf.is_none() {
            eprintln!(
                "host-local metrics: no host-local configuration for {network:?} in {}: totals unknown",
                conf_dir.display()
            );
        }
        out.add_network(&network, &mut store, conf.as_ref())?;
        store.commit()?;
    }
    Ok(out.render())
}
