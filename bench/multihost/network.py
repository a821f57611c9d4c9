"""Hosts on one machine: a network namespace per host, each joined by a veth pair to a bridge
in the root namespace (which gets the subnet's first address, so the bench reaches every host).

Names carry a random tag, and the subnet is a free private /24 picked at random, so that runs
side by side never share an interface, a namespace or an address.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Interface names are at most 15 characters: "rmh" + 6 hex + "-" + a short role, "br" at most.
_PREFIX = "rmh"


class NetworkUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, or no `ip`); says why."""


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its address, and its veth end on the bridge."""

    role: str
    namespace: str
    address: str
    link: str

    @property
    def prefix(self) -> list[str]:
        """The command that runs a program on this host."""
        return ["ip", "netns", "exec", self.namespace]


@dataclass(frozen=True)
class Network:
    """The bridge, the subnet and the hosts of one run."""

    tag: str
    bridge: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host]

    def cut(self, role: str) -> None:
        """Take the host off the network: its veth end on the bridge goes down, so its
        packets go nowhere and its connections hang, as behind a failed switch port."""
        _ip("link", "set", self.hosts[role].link, "down")

    def restore(self, role: str) -> None:
        """Put the host back on the network; its connections carry on where they were."""
        _ip("link", "set", self.hosts[role].link, "up")


def unavailable_reason() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{_PREFIX}probe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(command)}: {done.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no address or route of the root namespace overlaps."""
    listed = (
        subprocess.run(
            ["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True
        ).stdout
        + subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    )
    taken = []
    for word in listed.split():
        try:
            taken.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    taken = [net for net in taken if net.prefixlen > 0]  # the default route overlaps all
    rng = random.SystemRandom()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.randrange(64, 255)}.{rng.randrange(256)}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise NetworkUnavailable("no free 10.x.y.0/24 subnet found")


def namespace_pids(namespace: str) -> list[int]:
    """The processes whose network is the namespace's."""
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


def _kill_everything_in(namespace: str) -> None:
    # Whatever outlived its own stop (a daemon, a pool's orphaned child): by pid, ours all.
    for pid in namespace_pids(namespace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def hosts_network(roles: Iterable[str]) -> Iterator[Network]:
    """A namespace per role on one bridge; on leaving (also on an error or Ctrl-C) every
    process still in them is killed and the namespaces, veths and bridge are deleted."""
    tag = secrets.token_hex(3)
    bridge = f"{_PREFIX}{tag}br"
    made: list[str] = []
    links: list[str] = []
    bridge_made = False
    try:
        subnet = _free_subnet()
        addresses = list(subnet.hosts())
        _ip("link", "add", bridge, "type", "bridge")
        bridge_made = True
        _ip("addr", "add", f"{addresses[0]}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts = {}
        for index, role in enumerate(roles, start=1):
            namespace = f"recomengine-{tag}-{role}"
            short = "".join(part[0] for part in role.split("-"))[:3] + str(index)
            link, peer = f"{_PREFIX}{tag}{short}", f"{_PREFIX}{tag}{short}p"
            _ip("netns", "add", namespace)
            made.append(namespace)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            links.append(link)
            _ip("link", "set", peer, "netns", namespace)
            _ip("link", "set", link, "master", bridge, "up")
            address = str(addresses[index])
            _ip("link", "set", "lo", "up", namespace=namespace)
            _ip("link", "set", peer, "name", "eth0", namespace=namespace)
            _ip("addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0", namespace=namespace)
            _ip("link", "set", "eth0", "up", namespace=namespace)
            hosts[role] = Host(role=role, namespace=namespace, address=address, link=link)
        yield Network(tag=tag, bridge=bridge, subnet=subnet, hosts=hosts)
    finally:
        # Links cut when the run stopped come back first: the connections of the processes
        # killed next then close, instead of lingering in the kernel, which keeps a namespace
        # (and its veth) alive until their retransmissions give up.
        for link in links:
            subprocess.run(["ip", "link", "set", link, "up"], capture_output=True, check=False)
        for namespace in made:
            _kill_everything_in(namespace)
        for namespace in made:
            # Deleting a namespace deletes the veth end in it, and with it its peer.
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        if bridge_made:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
