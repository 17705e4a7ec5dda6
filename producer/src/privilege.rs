//! Least privilege for live capture, as `tcpdump -Z` does it: once the capture device is open (the only step that
//! needs `CAP_NET_RAW`), the process drops to the configured unprivileged user and group (`[producer.capture]`,
//! with the supplementary groups reduced to that group), clears every capability set (bounding, ambient,
//! inheritable, effective, permitted), sets `no_new_privs` so no later `execve` can regain any, and then checks
//! in `/proc/self/task/*/status` that no thread of the process still holds a capability or the old user. File
//! input needs none of this: reading a capture file needs no privilege.
//!
//! Capability sets belong to threads, while the user and group belong to the whole process (the C library
//! applies a change to every thread). So the binary opens a live interface and drops before it starts any other
//! thread (`open_capture` of this crate); a process that drops later is still fully unprivileged when it started
//! as root and names a user, because the kernel clears every thread's capabilities when its uids all leave 0.
//! The final check refuses to go on otherwise.

use std::path::Path;

use caps::CapSet;
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

/// `[producer.capture]`: whom a live capture continues as once its device is open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// User (name or numeric id) the producer switches to after opening `producer.interface`, e.g. `nobody`;
    /// it must not be root (uid 0). Switching needs root, or `CAP_SETUID` and `CAP_SETGID`, at start. Default:
    /// none, the user stays (its capabilities are cleared all the same).
    pub user: Option<String>,
    /// Group (name or numeric id) to switch to, the only group the process keeps. Default: the user's primary
    /// group. Needs `user`.
    pub group: Option<String>,
}

impl CaptureConfig {
    /// Every problem of the section, each naming its key. `live`: a live interface is configured.
    pub fn validate(&self, live: bool) -> Vec<String> {
        let mut e = Vec::new();
        for (key, value) in [("user", &self.user), ("group", &self.group)] {
            if matches!(value, Some(v) if v.trim().is_empty()) {
                e.push(format!("producer.capture.{key} must not be empty when set"));
            }
            if value.is_some() && !live {
                e.push(format!(
                    "producer.capture.{key} applies to live capture (producer.interface) only: reading a file needs \
                     no privilege to drop"
                ));
            }
        }
        if self.group.is_some() && self.user.is_none() {
            e.push("producer.capture.group needs producer.capture.user".into());
        }
        e
    }
}

/// What the process runs as after [`drop_privileges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// True when `[producer.capture] user` was applied.
    pub switched_user: bool,
}

/// Why the privileges could not be dropped. The capture must not go on then.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user.
    #[error("producer.capture.user: no user {0:?} on this system")]
    UnknownUser(String),
    /// No such group.
    #[error("producer.capture.group: no group {0:?} on this system")]
    UnknownGroup(String),
    /// A numeric user id with no entry of its own and no `group`.
    #[error("producer.capture.user: uid {0} has no user entry to take a primary group from: set the group")]
    NoPrimaryGroup(u32),
    /// The target user is root.
    #[error("producer.capture.user: {0:?} is uid 0 (root): name an unprivileged user such as `nobody`")]
    Root(String),
    /// Looking up the user or group database failed.
    #[error("cannot look up {what}: {source}")]
    Lookup {
        /// User or group and its name.
        what: String,
        /// The error.
        source: nix::Error,
    },
    /// A step of the switch failed (e.g. not root at start).
    #[error("cannot drop privileges: {step} failed: {source} (switching user needs root or CAP_SETUID and CAP_SETGID)")]
    Switch {
        /// `setgroups`, `setgid`, `setuid`, `no_new_privs`.
        step: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// Clearing a capability set failed.
    #[error("cannot clear the {set} capability set: {message}")]
    Capabilities {
        /// The set.
        set: &'static str,
        /// The error.
        message: String,
    },
    /// Reading `/proc/self/task` failed.
    #[error("cannot check the threads' privileges in /proc/self/task: {0}")]
    Proc(String),
    /// Some threads kept a capability or the old user.
    #[error(
        "privileges not dropped in every thread ({0}): start the producer as root with producer.capture.user set, \
         or open the capture before other threads start"
    )]
    Kept(String),
}

/// Switches to `config`'s user and group (when set), clears every capability set and sets `no_new_privs`, then
/// checks every thread of the process.
pub fn drop_privileges(config: &CaptureConfig) -> Result<Dropped, PrivilegeError> {
    let target = config.user.as_deref().map(|user| resolve(user, config.group.as_deref())).transpose()?;
    let cap_error = |set: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::Capabilities { set, message: e.to_string() }
    };
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the user switch clears.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).map_err(cap_error("effective"))? {
        caps::clear(None, CapSet::Bounding).map_err(cap_error("bounding"))?;
    }
    if let Some((uid, gid)) = target {
        let step = |step| move |source| PrivilegeError::Switch { step, source };
        nix::unistd::setgroups(&[gid]).map_err(step("setgroups"))?;
        nix::unistd::setgid(gid).map_err(step("setgid"))?;
        nix::unistd::setuid(uid).map_err(step("setuid"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(cap_error("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(cap_error("inheritable"))?;
    caps::clear(None, CapSet::Effective).map_err(cap_error("effective"))?;
    caps::clear(None, CapSet::Permitted).map_err(cap_error("permitted"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|source| PrivilegeError::Switch { step: "no_new_privs", source })?;
    let uid = nix::unistd::getuid().as_raw();
    let kept = threads_keeping_privileges(Path::new("/proc/self/task"), target.map(|_| uid))?;
    if !kept.is_empty() {
        return Err(PrivilegeError::Kept(kept.join(", ")));
    }
    Ok(Dropped { uid, gid: nix::unistd::getgid().as_raw(), switched_user: target.is_some() })
}

/// The user and group ids to switch to.
fn resolve(user: &str, group: Option<&str>) -> Result<(Uid, Gid), PrivilegeError> {
    let lookup = |what: String| move |source| PrivilegeError::Lookup { what, source };
    let (uid, entry) = match user.parse::<u32>() {
        Ok(id) => (Uid::from_raw(id), User::from_uid(Uid::from_raw(id)).map_err(lookup(format!("user {user}")))?),
        Err(_) => {
            let entry = User::from_name(user)
                .map_err(lookup(format!("user {user}")))?
                .ok_or_else(|| PrivilegeError::UnknownUser(user.to_string()))?;
            (entry.uid, Some(entry))
        }
    };
    if uid.is_root() {
        return Err(PrivilegeError::Root(user.to_string()));
    }
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(id) => Gid::from_raw(id),
            Err(_) => {
                Group::from_name(g)
                    .map_err(lookup(format!("group {g}")))?
                    .ok_or_else(|| PrivilegeError::UnknownGroup(g.to_string()))?
                    .gid
            }
        },
        None => entry.map(|u| u.gid).ok_or(PrivilegeError::NoPrimaryGroup(uid.as_raw()))?,
    };
    Ok((uid, gid))
}

/// The threads under `tasks` (a `/proc/<pid>/task` directory) that hold a permitted, effective or ambient
/// capability, or (with `uid`) any user id other than `uid`, each as `tid (why)`.
fn threads_keeping_privileges(tasks: &Path, uid: Option<u32>) -> Result<Vec<String>, PrivilegeError> {
    let proc_error = |e: std::io::Error| PrivilegeError::Proc(e.to_string());
    let mut kept = Vec::new();
    for task in std::fs::read_dir(tasks).map_err(proc_error)? {
        let task = task.map_err(proc_error)?;
        // A thread that ended since the listing has nothing left to keep.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        if let Some(why) = privileges_kept(&status, uid) {
            kept.push(format!("thread {} {why}", task.file_name().to_string_lossy()));
        }
    }
    Ok(kept)
}

/// What a `/proc/<pid>/status` text shows the task still holds, if anything.
pub fn privileges_kept(status: &str, uid: Option<u32>) -> Option<String> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'))).map(str::trim)
    };
    let mut why = Vec::new();
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        match field(set) {
            Some(v) if u64::from_str_radix(v, 16) == Ok(0) => {}
            Some(v) => why.push(format!("{set} {v}")),
            None if set == "CapAmb" => {} // kernels before 4.3 have no ambient set
            None => why.push(format!("no {set} line")),
        }
    }
    if let Some(uid) = uid {
        let uids = field("Uid").unwrap_or_default();
        if uids.split_whitespace().any(|u| u.parse() != Ok(uid)) {
            why.push(format!("Uid {uids}"));
        }
    }
    (!why.is_empty()).then(|| why.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_show_what_a_thread_keeps() {
        let clean = "Name:\tx\nUid:\t65534\t65534\t65534\t65534\nCapInh:\t0000000000000000\n\
                     CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n\
                     CapAmb:\t0000000000000000\n";
        assert_eq!(privileges_kept(clean, Some(65534)), None);
        assert_eq!(privileges_kept(clean, None), None);
        let root = clean
            .replace("65534\t65534\t65534\t65534", "0\t0\t0\t0")
            .replace("CapEff:\t0000000000000000", "CapEff:\t0000000000002000");
        let why = privileges_kept(&root, Some(65534)).unwrap();
        assert!(why.contains("CapEff 0000000000002000") && why.contains("Uid 0"), "{why}");
        assert!(privileges_kept("Name:\tx\n", None).unwrap().contains("no CapPrm"));
    }

    #[test]
    fn configuration_names_each_problem() {
        let ok = CaptureConfig { user: Some("nobody".into()), group: None };
        assert!(ok.validate(true).is_empty());
        assert!(ok.validate(false)[0].contains("live capture"), "{:?}", ok.validate(false));
        let bad = CaptureConfig { user: None, group: Some(" ".into()) };
        let e = bad.validate(true);
        assert!(e.iter().any(|e| e.contains("group must not be empty")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("needs producer.capture.user")), "{e:?}");
    }

    #[test]
    fn users_resolve_to_unprivileged_ids() {
        assert!(matches!(resolve("root", None), Err(PrivilegeError::Root(_))));
        assert!(matches!(resolve("0", None), Err(PrivilegeError::Root(_))));
        assert!(matches!(resolve("no-such-user-netanom", None), Err(PrivilegeError::UnknownUser(_))));
        if let Ok(Some(nobody)) = User::from_name("nobody") {
            assert_eq!(resolve("nobody", None).unwrap(), (nobody.uid, nobody.gid));
            assert_eq!(resolve("nobody", Some("4242")).unwrap(), (nobody.uid, Gid::from_raw(4242)));
            assert!(matches!(resolve("nobody", Some("no-such-group-netanom")), Err(PrivilegeError::UnknownGroup(_))));
        }
        assert!(matches!(resolve("4242424", None), Err(PrivilegeError::NoPrimaryGroup(4242424))));
        assert_eq!(resolve("4242424", Some("4242")).unwrap(), (Uid::from_raw(4242424), Gid::from_raw(4242)));
    }

    #[test]
    fn this_test_process_is_checked_thread_by_thread() {
        // Whatever the test runs as, the check reads every thread and agrees with the main thread's status.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kept = threads_keeping_privileges(Path::new("/proc/self/task"), None).unwrap();
        assert_eq!(privileges_kept(&status, None).is_some(), !kept.is_empty(), "{kept:?}");
    }
}
