//! What the config needs to know about the machine: its interfaces, its default route and its
//! users.

/// What the config needs to know about the host; a trait so tests do not depend on the machine's
/// interfaces and routes.
pub(crate) trait Host {
    /// Names of the host's network interfaces, sorted.
    fn interfaces(&self) -> Vec<String>;
    /// The interface of the default route: IPv4's, else IPv6's.
    fn default_route_interface(&self) -> Option<String>;
    /// The user id and primary group id of the user `name`, if it exists.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
}

/// The machine we run on, read from /sys and /proc (reading only: `check` touches nothing).
pub(crate) struct LiveHost;

impl Host for LiveHost {
    fn interfaces(&self) -> Vec<String> {
        // if_nameindex asks the kernel (netlink) about this process's network namespace;
        // /sys/class/net would show the namespace sysfs was mounted in, which differs under
        // `nsenter --net`.
        let mut names = Vec::new();
        // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
        unsafe {
            let list = libc::if_nameindex();
            if list.is_null() {
                return names;
            }
            let mut entry = list;
            while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
                names.push(
                    std::ffi::CStr::from_ptr((*entry).if_name)
                        .to_string_lossy()
                        .into_owned(),
                );
                entry = entry.add(1);
            }
            libc::if_freenameindex(list);
        }
        names.sort();
        names
    }

    fn default_route_interface(&self) -> Option<String> {
        let read = |path| std::fs::read_to_string(path).ok();
        read("/proc/net/route")
            .and_then(|table| default_route_v4(&table))
            .or_else(|| read("/proc/net/ipv6_route").and_then(|table| default_route_v6(&table)))
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        // The name service (passwd, and whatever nsswitch.conf adds), as `id NAME` asks it.
        let user = nix::unistd::User::from_name(name).ok()??;
        Some((user.uid.as_raw(), user.gid.as_raw()))
    }
}

/// The host of a load that reads only sections naming nothing on the machine (see
/// `config::partial`): asking it anything is a bug in hookwall, not in the config.
pub(crate) struct NoHost;

impl Host for NoHost {
    fn interfaces(&self) -> Vec<String> {
        unreachable!("a partial config load asked for the host's interfaces")
    }

    fn default_route_interface(&self) -> Option<String> {
        unreachable!("a partial config load asked for the host's default route")
    }

    fn user(&self, _: &str) -> Option<(u32, u32)> {
        unreachable!("a partial config load asked for a user of the host")
    }
}

/// Kernel route flags (linux/route.h).
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The interface of the IPv4 default route with the lowest metric, from /proc/net/route
/// (`Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, hex fields).
pub(crate) fn default_route_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [iface, dest, _gw, flags, _refcnt, _use, metric, mask, ..] = fields[..] else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = dest == "00000000" && mask == "00000000";
            (is_default && flags & RTF_UP != 0 && flags & RTF_REJECT == 0)
                .then(|| Some((metric.parse::<u32>().ok()?, iface.to_owned())))?
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route with the lowest metric, from /proc/net/ipv6_route
/// (`dest plen src splen nexthop metric refcnt use flags iface`, hex fields, no header). The
/// kernel lists an unreachable default on `lo`; that one is skipped.
pub(crate) fn default_route_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [
                dest,
                plen,
                _src,
                _splen,
                _hop,
                metric,
                _refcnt,
                _use,
                flags,
                iface,
            ] = fields[..]
            else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = plen == "00" && dest.bytes().all(|b| b == b'0');
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && iface != "lo";
            (is_default && usable)
                .then(|| Some((u32::from_str_radix(metric, 16).ok()?, iface.to_owned())))?
        })
        .min()
        .map(|(_, iface)| iface)
}
