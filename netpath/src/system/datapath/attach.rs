//! Putting programs on bridges, external interfaces and container veths, and taking
//! them off again.
use std::{fs, path::PathBuf};

use aya::programs::{
    SchedClassifier, TcAttachType,
    links::{FdLink, LinkError, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact},
};
use netpath_common::{BRIDGE_NO_MASQUERADE, BridgeInfo, maps, programs};

use super::{
    Datapath,
    error::{DatapathError, Result},
    maps::{Bridges, Externals, remove_key},
    pins::{VETH_PROGRAM_PIN, remove_pin},
    program,
};

/// The veth program's filter priority and handle on every veth: fixed, so that `up` replaces
/// it in place.
const VETH_FILTER: (u16, TcHandle) = (1, TcHandle::new(0, 1));

impl Datapath {
    /// Attaches a TC program and pins its link as `link_<pin>`. An existing live link (from
    /// an earlier run) gets the new program atomically; a link severed by the deletion of its
    /// interface (ENOLINK) is replaced by a new attachment.
    fn attach_tc(
        &self,
        prog: &'static str,
        ifname: &str,
        at: TcAttachType,
        pin: &str,
    ) -> Result<()> {
        let pin = self.link_pin(pin);
        self.with_ebpf(|ebpf| {
            let program = program(ebpf, prog, SchedClassifier::load)?;
            let attach = |source| DatapathError::Attach {
                program: prog,
                target: ifname.to_owned(),
                source,
            };
            let replaced = PinnedLink::from_pin(&pin).ok().and_then(|old| {
                let _ = fs::remove_file(&pin);
                let link = FdLink::from(old).try_into().ok()?;
                program.attach_to_link(link).ok()
            });
            let link_id = match replaced {
                Some(id) => id,
                None => program.attach(ifname, at).map_err(attach)?,
            };
            let link = program.take_link(link_id).map_err(attach)?;
            pin_link(link.try_into(), pin)
        })
    }

    /// Loads the container-veth program and pins it; `attach_veth` then attaches it without
    /// loading the object (which would cost a container start tens of milliseconds of
    /// verification).
    pub fn load_veth_program(&self) -> Result<()> {
        let pin = self.dir.join(VETH_PROGRAM_PIN);
        self.with_ebpf(|ebpf| {
            let program = program(ebpf, programs::VETH_IN, SchedClassifier::load)?;
            remove_pin(&pin)?;
            program.pin(&pin).map_err(DatapathError::pin(pin))
        })
    }

    /// Attaches the container-veth program (pinned by `load_veth_program`, loaded first if it
    /// is not) to the ingress of a container's host-side veth, replacing the program already
    /// there in place. A clsact filter rather than a tcx link: the first tcx link of a device
    /// waits for an RCU grace period (about 10 ms, a container start's whole budget), and
    /// the filter, like the veth, needs no pin: it goes when the veth is deleted.
    pub fn attach_veth(&self, ifname: &str) -> Result<()> {
        let pin = self.dir.join(VETH_PROGRAM_PIN);
        if !pin.exists() {
            self.load_veth_program()?;
        }
        let mut program = SchedClassifier::from_pin(&pin).map_err(DatapathError::program(
            programs::VETH_IN,
            "opening the pin of",
        ))?;
        let (priority, handle) = VETH_FILTER;
        let replaced =
            SchedClassifierLink::attached(ifname, TcAttachType::Ingress, priority, handle, None)
                .ok()
                .and_then(|old| program.attach_to_link(old).ok());
        let attach = |source| DatapathError::Attach {
            program: programs::VETH_IN,
            target: format!("veth {ifname}"),
            source,
        };
        let link_id = match replaced {
            Some(id) => id,
            None => {
                // A fresh veth has no qdisc yet; an existing clsact is fine.
                let _ = qdisc_add_clsact(ifname);
                let options = NlOptions {
                    priority,
                    handle,
                    ..Default::default()
                };
                program
                    .attach_with_options(
                        ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(options),
                    )
                    .map_err(attach)?
            }
        };
        // Dropping the link would detach the filter; it is the veth's to keep.
        std::mem::forget(program.take_link(link_id).map_err(attach)?);
        Ok(())
    }

    /// Detaches by unpinning: the pin holds the link's last reference.
    pub(super) fn detach(&self, pin: &str) -> Result<()> {
        let pin = self.link_pin(pin);
        match PinnedLink::from_pin(&pin) {
            Ok(link) => drop(link.unpin().map_err(DatapathError::io("unpinning", &pin))?),
            Err(_) if !pin.exists() => {}
            Err(e) => return Err(DatapathError::link("opening", pin)(e)),
        }
        Ok(())
    }

    /// Registers a bridge (with whether its containers' connections to the outside are
    /// masqueraded), attaches isolation to its egress and translation to its ingress. On
    /// failure the bridge is left as it was found.
    pub fn attach_bridge(
        &self,
        bridge: &str,
        ifindex: u32,
        network_id: u32,
        masquerade: bool,
    ) -> Result<()> {
        let mut bridges: Bridges = self.map(maps::BRIDGES)?;
        let info = BridgeInfo {
            network_id,
            flags: if masquerade { 0 } else { BRIDGE_NO_MASQUERADE },
        };
        bridges
            .insert(ifindex, info, 0)
            .map_err(DatapathError::map(
                maps::BRIDGES,
                format!("registering bridge {bridge}"),
            ))?;
        let isolate = format!("isolate_{bridge}");
        let br_in = format!("br_in_{bridge}");
        let attached = self
            .attach_tc(programs::ISOLATE, bridge, TcAttachType::Egress, &isolate)
            .and_then(|()| self.attach_tc(programs::BR_IN, bridge, TcAttachType::Ingress, &br_in));
        attached
            .map_err(|failed| DatapathError::undone(failed, self.detach_bridge(bridge, ifindex)))
    }

    /// Detaches the bridge's programs and forgets the bridge.
    pub fn detach_bridge(&self, bridge: &str, ifindex: u32) -> Result<()> {
        self.detach(&format!("isolate_{bridge}"))?;
        self.detach(&format!("br_in_{bridge}"))?;
        let mut bridges: Bridges = self.map(maps::BRIDGES)?;
        remove_key(&mut bridges, &ifindex).map_err(DatapathError::map(
            maps::BRIDGES,
            format!("removing bridge {bridge}"),
        ))?;
        Ok(())
    }

    /// Attaches translation (published ports in, masquerade replies) to the ingress of an
    /// interface that faces clients, and lets masquerade send out of it.
    pub fn attach_external(&self, ifname: &str, ifindex: u32) -> Result<()> {
        let pin = format!("ext_in_{ifname}");
        self.attach_tc(programs::EXT_IN, ifname, TcAttachType::Ingress, &pin)?;
        let registered = self
            .map(maps::EXTERNALS)
            .and_then(|mut externals: Externals| {
                externals.insert(ifindex, 1, 0).map_err(DatapathError::map(
                    maps::EXTERNALS,
                    format!("registering {ifname}"),
                ))
            });
        // All or nothing: a caller that fails here records no external to detach later.
        registered.map_err(|failed| DatapathError::undone(failed, self.detach(&pin)))
    }

    /// The reverse of `attach_external`; `ifindex` is None when it is not known.
    pub fn detach_external(&self, ifname: &str, ifindex: Option<u32>) -> Result<()> {
        if let Some(ifindex) = ifindex {
            let mut externals: Externals = self.map(maps::EXTERNALS)?;
            remove_key(&mut externals, &ifindex).map_err(DatapathError::map(
                maps::EXTERNALS,
                format!("unregistering {ifname}"),
            ))?;
        }
        self.detach(&format!("ext_in_{ifname}"))
    }
}

/// Pins a link just taken from its program (as an `FdLink`, which is what can be pinned).
pub(super) fn pin_link(link: Result<FdLink, LinkError>, pin: PathBuf) -> Result<()> {
    let link = link.map_err(DatapathError::link("pinning a link at", &pin))?;
    link.pin(&pin).map_err(DatapathError::pin(pin))?;
    Ok(())
}
