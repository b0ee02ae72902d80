"""Traffic-control scrub of a pooled port's host end: what a chained plugin shaped, undone.

Why. The CNI ``bandwidth`` plugin (chained after ours) shapes a pod on the *host* end of
its veth: a root qdisc (``tbf``, ``htb`` in newer releases) for traffic into the pod, and
an ``ingress`` qdisc whose filter redirects (``mirred egress redirect``) what the pod
sends to an ``ifb`` device carrying the other qdisc. A plain veth dies with its pod and
takes all of that along; a *pooled* port does not: its tap stays on the node and goes
back to the parking netns (``parking.py``), so without a scrub the next pod on that port
would inherit the previous pod's rate limit.

What ``scrub_host_end`` does, over raw rtnetlink:

1. dumps the filters of the link's ingress hook and collects the targets of their
   ``mirred`` actions, before step 3 deletes those filters;
2. deletes the root qdisc (``RTM_DELQDISC``, parent ``TC_H_ROOT``): the kernel puts the
   device's default back (``noqueue`` on a veth);
3. deletes the ingress (or clsact) qdisc (parent ``TC_H_INGRESS``) with its filters;
4. deletes each redirect target that is an ``ifb`` named like the reference plugin's
   (``bwp`` + a hash of the network name and container id, 15 characters at most):
   the plugin's own DEL removes it, this covers a DEL that never ran. An ifb named
   otherwise is left alone (it may serve more than this link) and logged.

"Already gone" is success everywhere: ``ENOENT`` when there is no such qdisc, or when
the qdisc there is the default (handle 0, "Cannot delete qdisc with handle of zero").
"""

from __future__ import annotations

import logging
import struct

from cloudnic.dataplane import nlattr as a
from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.rtnl import Request
from cloudnic.errors import CNIError, is_gone

log = logging.getLogger(__name__)

RTM_DELQDISC = 37
RTM_GETTFILTER = 46
TCMSG = struct.Struct("=BBHiIII")          # family, pad, pad, ifindex, handle, parent, info
TCA_KIND, TCA_OPTIONS = 1, 2
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1                  # the ingress / clsact qdisc
TC_H_INGRESS_BLOCK = 0xFFFFFFF2            # ffff:fff2: the ingress filters of either of them
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_MIRRED_PARMS = 2
MIRRED_IFINDEX = 24                        # struct tc_mirred: tc_gen (5 x 32 bits), eaction, ifindex
# where each classifier keeps its action list (linux/pkt_cls.h)
ACTIONS_OF = {"u32": 7, "matchall": 2, "flower": 3, "bpf": 1, "basic": 3, "fw": 4}
IFB_PREFIX = "bwp"                         # the reference bandwidth plugin's ifb names
IFNAMSIZ = 15


def tcmsg(index: int, parent: int, handle: int = 0) -> bytes:
    return TCMSG.pack(0, 0, 0, index, handle, parent, 0)


def delqdisc(index: int, parent: int, what: str = "") -> Request:
    return Request(RTM_DELQDISC, 0, tcmsg(index, parent), what)


def dumpfilters(index: int, parent: int = TC_H_INGRESS_BLOCK) -> Request:
    return Request(RTM_GETTFILTER, 0, tcmsg(index, parent), "listing ingress filters")


def mirred_targets(payload: bytes) -> set[int]:
    """The ifindexes the ``mirred`` actions of one RTM_NEWTFILTER reply send packets to."""
    attrs = a.parse(payload, TCMSG.size)
    slot = ACTIONS_OF.get(a.get_str(attrs, TCA_KIND))
    if slot is None:
        return set()
    actions = a.parse(a.parse(attrs.get(TCA_OPTIONS, b"")).get(slot, b""))
    out = set()
    for raw in actions.values():           # keyed by the action's order: 1, 2, ...
        act = a.parse(raw)
        if a.get_str(act, TCA_ACT_KIND) != "mirred":
            continue
        parms = a.parse(act.get(TCA_ACT_OPTIONS, b"")).get(TCA_MIRRED_PARMS, b"")
        if len(parms) >= MIRRED_IFINDEX + 4:
            (ifindex,) = struct.unpack_from("=I", parms, MIRRED_IFINDEX)
            if ifindex:
                out.add(ifindex)
    return out


def is_plugin_ifb(ifname: str, kind: str) -> bool:
    """An ifb the reference bandwidth plugin made: ``bwp`` + hash, at most 15 characters."""
    return kind == "ifb" and ifname.startswith(IFB_PREFIX) and len(ifname) <= IFNAMSIZ


def _absent(e: CNIError) -> bool:
    """A qdisc/filter request found nothing to act on (no such qdisc, or only the default)."""
    return is_gone(e.__cause__ or e)


def redirect_targets(kernel: Kernel, index: int, ifname: str) -> set[int]:
    """Ifindexes the ingress filters of ``index`` redirect to; empty when it has none."""
    try:
        with kernel.call(f"listing the ingress filters of {ifname}"):
            msgs = kernel.sock.dump(dumpfilters(index))
    except CNIError as e:
        if _absent(e):
            return set()
        raise
    out: set[int] = set()
    for _, payload in msgs:
        out |= mirred_targets(payload)
    return out


def delete_qdisc(kernel: Kernel, index: int, parent: int, what: str) -> bool:
    """Delete the qdisc at ``parent`` of ``index``; False when there was none but the default."""
    try:
        with kernel.call(f"deleting {what}"):
            kernel.sock.request(delqdisc(index, parent))
    except CNIError as e:
        if _absent(e):
            return False
        raise
    return True


def scrub_host_end(kernel: Kernel, index: int, ifname: str) -> list[str]:
    """Remove root and ingress qdiscs of ``ifname`` and the plugin ifbs it redirects to; what went."""
    targets = redirect_targets(kernel, index, ifname)
    removed = []
    if delete_qdisc(kernel, index, TC_H_ROOT, f"the root qdisc of {ifname}"):
        removed.append(f"root qdisc of {ifname}")
    if delete_qdisc(kernel, index, TC_H_INGRESS, f"the ingress qdisc of {ifname}"):
        removed.append(f"ingress qdisc of {ifname}")
    for target in sorted(targets - {index}):
        link = kernel.link(index=target)
        if link is None:
            continue
        if not is_plugin_ifb(link.ifname, link.kind):
            log.info("%s redirected to %s (%s), not a bandwidth plugin ifb: left alone", ifname, link.ifname,
                     link.kind or "plain link")
            continue
        if kernel.delete_link(link.index, link.ifname):
            removed.append(f"ifb {link.ifname}")
    if removed:
        log.info("scrubbed %s of a previous pod's traffic control: %s", ifname, ", ".join(removed))
    return removed
