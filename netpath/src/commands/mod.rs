//! What each command does: the glue between the CLI, the state store, netlink and the
//! datapath. Each command runs with the scope's lock held and saves the state once at the end,
//! or undoes what it built when it fails.
pub mod cni;
pub mod conntrack;
pub mod container;
pub mod docker;
pub mod host;
pub mod masquerade;
pub mod network;
pub mod publish;
pub mod stats;
pub mod status;

use std::{cell::OnceCell, fmt::Display, rc::Rc};

use anyhow::{Result, bail};
use netpath_common::MAX_CONNTRACK;

use crate::{
    model::state::{State, Store},
    output::Response,
    system::datapath::Datapath,
    system::netlink::Netlink,
    system::netns::Netns,
};

pub const DEFAULT_NETWORK: &str = "default";
pub const DEFAULT_BRIDGE: &str = "netpath0";

/// Everything a command needs: the locked state of its scope and a netlink socket there.
pub struct Ctx {
    pub scope: String,
    pub store: Store,
    pub state: State,
    pub nl: Netlink,
    /// Opened by the first step that needs it and shared by the others, so that a command
    /// checks the pins and loads the eBPF object once.
    datapath: OnceCell<Rc<Datapath>>,
}

impl Ctx {
    /// The scope, locked, with no container's record read yet: a command reads those it
    /// names, so that it costs the same however many others there are.
    pub fn open(scope: &str) -> Result<Ctx> {
        let store = Store::open(scope)?;
        let state = store.load()?;
        Ok(Ctx {
            scope: scope.to_owned(),
            store,
            state,
            nl: Netlink::open()?,
            datapath: OnceCell::new(),
        })
    }

    /// The scope's datapath, created if there is none.
    pub fn datapath(&self) -> Result<Rc<Datapath>> {
        if let Some(dp) = self.datapath.get() {
            return Ok(dp.clone());
        }
        let conntrack_max = self.state.conntrack_max.unwrap_or(MAX_CONNTRACK);
        let dp = Rc::new(Datapath::open(&self.scope, conntrack_max)?);
        Ok(self.datapath.get_or_init(|| dp).clone())
    }

    /// Persists the state; a scope left with nothing in it is removed entirely (state
    /// directory and pins), so that a failed first command or a `down` leaves no trace.
    pub fn finish(self) -> Result<()> {
        let s = &self.state;
        if !s.networks.is_empty()
            || s.ip_forward_before.is_some()
            || !s.externals.is_empty()
            || !s.publishes.is_empty()
            // When in doubt, saved: removing the scope would forget what it holds.
            || !s.containers.is_empty().unwrap_or(false)
        {
            return self.store.save(s);
        }
        if let Some(dp) = Datapath::existing(&self.scope) {
            dp.remove()?;
        }
        self.store.remove()
    }
}

/// The scope of a process: the `--netns` name; else the name of the namespace it runs in
/// under /run/netns, if it has one (netpath-cni, which a runtime starts with `nsenter
/// --net=/run/netns/NS`, shares the scope of `netpath --netns NS`); "host" in the initial
/// network namespace; or the namespace's inode for an anonymous one (so two namespaces never
/// share state or pins).
pub fn scope(netns: Option<&str>) -> Result<String> {
    if let Some(name) = netns {
        return Ok(name.to_owned());
    }
    let current = Netns::current()?.inode()?;
    let init = std::fs::metadata("/proc/1/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    if matches!(init, Ok(init) if init == current) {
        return Ok("host".to_owned());
    }
    Ok(match crate::system::netns::current_name()? {
        Some(name) => name,
        None => format!("netns-{current}"),
    })
}

/// Names of networks and containers: what Docker accepts, and safe as file names.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!(
            "invalid {kind} name {name:?}: use 1-64 characters [a-zA-Z0-9_.-], starting with a letter or digit"
        );
    }
    Ok(())
}

/// Interface names as the kernel takes them (IFNAMSIZ is 16 with the NUL).
pub fn check_ifname(name: &str) -> Result<()> {
    if name.len() > 15 {
        bail!("interface name {name:?} is longer than 15 bytes");
    }
    if name.is_empty()
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!("invalid interface name {name:?}");
    }
    Ok(())
}

/// Collects what a teardown removed and every failure on the way, so that one failure never
/// stops the rest; the caller reports all of them.
#[derive(Default)]
pub struct Teardown {
    pub removed: Vec<String>,
    pub errors: Vec<anyhow::Error>,
}

impl Teardown {
    pub fn step<T>(&mut self, what: impl Display, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                self.removed.push(what.to_string());
                Some(v)
            }
            Err(e) => {
                self.errors.push(e.context(format!("removing {what}")));
                None
            }
        }
    }

    pub fn merge(&mut self, other: Teardown) {
        self.removed.extend(other.removed);
        self.errors.extend(other.errors);
    }

    /// `failed`, the error this teardown undid the work of, telling also what the teardown
    /// could not remove. That makes a new error, which keeps `failed`'s message but not its
    /// type: the CNI plugin, whose refusals carry a code, adds [`Teardown::failures`] itself.
    pub fn undoing(self, failed: anyhow::Error) -> anyhow::Error {
        match self.failures() {
            None => failed,
            Some(undo) => anyhow::anyhow!("{failed:#} (and undoing it: {undo})"),
        }
    }

    /// Every failure of this teardown on one line, or None if there was none.
    pub fn failures(self) -> Option<String> {
        self.finish()
            .err()
            .map(|u| u.to_string().replace('\n', ";"))
    }

    /// What was removed, one line each; a [`TeardownError`] with every failure (and what
    /// was removed all the same) if there was any.
    pub fn finish(self) -> Result<Response, TeardownError> {
        let done = self
            .removed
            .iter()
            .map(|what| format!("removed {what}"))
            .collect();
        match self.errors.is_empty() {
            true => Ok(Response::Done(done)),
            false => Err(TeardownError {
                done,
                errors: self.errors,
            }),
        }
    }
}

/// A teardown that failed in places: every failure, each with what it was removing, and what
/// was removed before and after them (netavark's error list is the model).
#[derive(Debug)]
pub struct TeardownError {
    pub done: Vec<String>,
    pub errors: Vec<anyhow::Error>,
}

impl std::fmt::Display for TeardownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} teardown step(s) failed", self.errors.len())?;
        self.errors.iter().try_for_each(|e| write!(f, "\n  {e:#}"))
    }
}

impl std::error::Error for TeardownError {}
