"""cloudnic.providers.standalone: the embedded cloud — networks from the agent config,
ports and addresses in the store. What ``make demo`` and the functional tests run."""

from .allocator import SubnetAllocator
from .config import NetworkConfig, SubnetConfig, networks_from_config, validate_networks
from .provider import CLUSTER_TAG, NODE_TAG, StandaloneProvider, ownership_tags

__all__ = [
    "CLUSTER_TAG",
    "NODE_TAG",
    "NetworkConfig",
    "StandaloneProvider",
    "SubnetAllocator",
    "SubnetConfig",
    "networks_from_config",
    "ownership_tags",
    "validate_networks",
]
