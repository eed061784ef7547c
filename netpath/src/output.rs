//! The one place that writes what commands show. Commands return a [`Response`] (or, when
//! they stream, hand lines to a writer they are given); this module renders it as a table
//! or as JSON to any `io::Write`, and `main` handles a failed write in one place.
use std::io::{self, Write};

use serde::Serialize;

use crate::{
    commands::{container::ContainerView, network::NetworkView, status::Status},
    model::{
        conntrack::{self, Connection},
        ipam::Subnet,
        publish::Spec,
        stats::{self, Stats},
    },
};

/// How a response is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// The Prometheus text exposition format (`stats` only; anything else shows a table).
    Prometheus,
}

/// What a command did or shows. JSON is the content itself (an array of containers, the
/// status object, ...), as scripts parse it.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Response {
    /// What an action did, one line each ("removed container web").
    Done(Vec<String>),
    Containers(Vec<ContainerView>),
    Networks(Vec<NetworkView>),
    /// One SPEC per line, as `publish --from-file` reads them back.
    Publishes(Vec<Spec>),
    Connections(Vec<Connection>),
    Status(Box<Status>),
    Stats(Box<Stats>),
}

/// A failed write of a command's output. A closed pipe is the reader's choice and ends the
/// command quietly; anything else (a full disk) fails it.
#[derive(Debug, thiserror::Error)]
#[error("writing the output: {0}")]
pub struct OutputError(#[from] pub io::Error);

impl OutputError {
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Writes `response` in `format` and flushes, so that a full disk is reported here.
pub fn write(w: &mut impl Write, response: &Response, format: Format) -> Result<(), OutputError> {
    match (format, response) {
        (Format::Json, _) => {
            serde_json::to_writer_pretty(&mut *w, response).map_err(io::Error::from)?;
            writeln!(w)?;
        }
        (Format::Prometheus, Response::Stats(s)) => {
            w.write_all(stats::prometheus(&s.samples()).as_bytes())?
        }
        (_, Response::Done(lines)) => lines.iter().try_for_each(|l| writeln!(w, "{l}"))?,
        (_, Response::Containers(views)) => containers(w, views)?,
        (_, Response::Networks(views)) => networks(w, views, false)?,
        (_, Response::Publishes(specs)) => specs.iter().try_for_each(|s| writeln!(w, "{s}"))?,
        (_, Response::Connections(c)) => w.write_all(conntrack::table(c).as_bytes())?,
        (_, Response::Status(s)) => status(w, s)?,
        (_, Response::Stats(s)) => w.write_all(stats::table(&s.samples(), None).as_bytes())?,
    }
    w.flush()?;
    Ok(())
}

/// A CNI plugin's answer (result, version, error) as the runtime reads it: one JSON document
/// on stdout. `None` (DEL, CHECK, ...) writes nothing.
pub fn cni(w: &mut impl Write, answer: Option<&impl Serialize>) -> Result<(), OutputError> {
    if let Some(answer) = answer {
        serde_json::to_writer(&mut *w, answer).map_err(io::Error::from)?;
        writeln!(w)?;
    }
    w.flush()?;
    Ok(())
}

/// One line of a streaming command (`up` in the foreground, `stats --watch`), flushed at once.
pub fn line(w: &mut impl Write, line: &str) -> Result<(), OutputError> {
    writeln!(w, "{line}")?;
    w.flush()?;
    Ok(())
}

fn containers(w: &mut impl Write, views: &[ContainerView]) -> io::Result<()> {
    writeln!(
        w,
        "{:<20} {:<22} {:<40} {:<30} STATUS",
        "NAME", "MODE", "ADDRESSES", "PORTS"
    )?;
    for v in views {
        let mode = v.container.mode.to_string();
        let addrs: Vec<String> = v
            .container
            .endpoints
            .iter()
            .map(|e| format!("{}={}@{}", e.ifname, e.ip, e.network))
            .collect();
        let status = if v.missing.is_empty() {
            "ok".to_owned()
        } else {
            format!("missing: {} (netpath rm to clean up)", v.missing.join(", "))
        };
        let ports: Vec<String> = v.ports.iter().map(Spec::docker_form).collect();
        writeln!(
            w,
            "{:<20} {mode:<22} {:<40} {:<30} {status}",
            v.name,
            addrs.join(" "),
            ports.join(", ")
        )?;
    }
    Ok(())
}

/// The `network ls` table; `status` passes each bridge's ifindex for a column of its own.
fn networks(w: &mut impl Write, views: &[NetworkView], with_ifindex: bool) -> io::Result<()> {
    let ifindex = |v: String| match with_ifindex {
        true => format!("{v:<8} "),
        false => String::new(),
    };
    writeln!(
        w,
        "{:<20} {:<16} {:<18} {:<16} {:<10} {}STATUS",
        "NAME",
        "BRIDGE",
        "SUBNET",
        "GATEWAY",
        "MASQUERADE",
        ifindex("IFINDEX".to_owned())
    )?;
    for v in views {
        let status = if v.bridge_present {
            "ok"
        } else {
            "bridge missing (run netpath up)"
        };
        writeln!(
            w,
            "{:<20} {:<16} {:<18} {:<16} {:<10} {}{status}",
            v.name,
            v.network.bridge,
            v.network.subnet.to_string(),
            v.network.gateway.to_string(),
            if v.network.masquerade { "on" } else { "off" },
            ifindex(v.network.ifindex.to_string())
        )?;
    }
    Ok(())
}

fn status(w: &mut impl Write, s: &Status) -> io::Result<()> {
    writeln!(
        w,
        "scope {}: state in {}, pins in {}",
        s.scope, s.state_dir, s.pin_dir
    )?;
    writeln!(w, "\nNETWORKS")?;
    networks(w, &s.networks, true)?;
    writeln!(w, "\nCONTAINERS")?;
    containers(w, &s.containers)?;
    writeln!(w, "\nPUBLISHED PORTS: {}", s.publishes.ports)?;
    for spec in &s.publishes.specs {
        writeln!(w, "{spec}")?;
    }
    let m = &s.masquerade;
    let exclude: Vec<String> = m.exclude.iter().map(Subnet::to_string).collect();
    writeln!(w, "\nMASQUERADE")?;
    writeln!(
        w,
        "ports {}{}; excluded beside the networks: {}",
        m.ports,
        if m.default_ports { " (default)" } else { "" },
        if exclude.is_empty() {
            "none".to_owned()
        } else {
            exclude.join(", ")
        }
    )?;
    writeln!(w, "\nEXTERNAL INTERFACES")?;
    writeln!(w, "{:<16} {:<8} STATUS", "NAME", "IFINDEX")?;
    for e in &s.externals {
        let (ifindex, status) = match e.ifindex {
            Some(i) => (i.to_string(), "ok"),
            None => ("-".to_owned(), "missing (run netpath up)"),
        };
        writeln!(w, "{:<16} {ifindex:<8} {status}", e.name)?;
    }
    writeln!(w, "\nATTACHMENTS")?;
    writeln!(
        w,
        "{:<16} {:<20} {:<24} {:>8} {:>8}",
        "PROGRAM", "HOOK", "TARGET", "LINK", "PROG"
    )?;
    for a in &s.attachments {
        writeln!(
            w,
            "{:<16} {:<20} {:<24} {:>8} {:>8}",
            a.program,
            a.hook,
            a.target,
            a.link_id.map_or("-".to_owned(), |id| id.to_string()),
            a.program_id
        )?;
    }
    writeln!(w, "\nMAPS")?;
    writeln!(
        w,
        "{:<16} {:>8} {:>8} {:>7} {:>10}",
        "NAME", "ENTRIES", "MAX", "FILL", "MEMORY"
    )?;
    for m in &s.maps {
        let fill = 100.0 * m.entries as f64 / f64::from(m.max_entries.max(1));
        let mib = m.memory_bytes as f64 / f64::from(1 << 20);
        writeln!(
            w,
            "{:<16} {:>8} {:>8} {:>6.1}% {mib:>6.1} MiB",
            m.name, m.entries, m.max_entries, fill
        )?;
    }
    Ok(())
}
