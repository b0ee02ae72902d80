"""cloudnic as the interface plugin of a chain: cloudnic → portmap → bandwidth → tuning.

The reference meta plugins (Debian's containernetworking-plugins) consume cloudnic's result as
prevResult: portmap DNATs 127.0.0.1:<port> to the address cloudnic reported, bandwidth shapes
the host veth cloudnic listed, tuning sets a sysctl on the interface it named. CHECK runs every
plugin; DEL removes the rules, the qdiscs, the ifb device and both veth ends.
"""

from __future__ import annotations

import pytest
from e2e_chain import chain_conf, exercise_chain, exercise_tuning_mac
from e2e_peers import Cnitool
from e2e_util import netns, network

pytestmark = pytest.mark.e2e

NET, BRIDGE, SUBNET, GATEWAY = network("chain")


@pytest.mark.parametrize(("version", "host_port"), [("0.4.0", 18941), ("1.0.0", 18942)])
def test_chain_portmap_bandwidth_tuning(cnitool: Cnitool, version: str, host_port: int) -> None:
    cnitool.write(chain_conf(NET, {"type": "cloudnic", "network": NET}, version))
    with netns("chain") as ns:
        exercise_chain(cnitool, NET, ns, host_port)


def test_chain_tuning_mac_then_check(cnitool: Cnitool) -> None:
    with netns("mac") as ns:
        exercise_tuning_mac(cnitool, NET, {"type": "cloudnic", "network": NET}, ns)
