"""Slots held mid-migration on a real Redis Cluster, then moved for good, as
``redis-cli --cluster reshard`` does: for the tests that keep the worker and the API
going through a migration (issue 28, item 7)."""

from __future__ import annotations

from collections.abc import Iterable

import redis
import redis.cluster

from freshrec.stack import wait_until

Node = redis.cluster.ClusterNode


def node_client(node: Node) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, socket_timeout=5)


class Migration:
    """Each of ``slots`` held migrating from its primary to the next one (by name)."""

    def __init__(self, client: redis.cluster.RedisCluster, slots: Iterable[int]) -> None:
        self.primaries = sorted(client.get_primaries(), key=lambda n: n.name)
        self.ids = {
            n.name: node_client(n).execute_command("CLUSTER MYID").decode() for n in self.primaries
        }
        self.moves: dict[int, tuple[Node, Node]] = {}
        for slot in slots:
            source = client.nodes_manager.get_node_from_slot(slot)
            index = self.primaries.index(source)
            self.moves[slot] = (source, self.primaries[(index + 1) % len(self.primaries)])

    def hold(self) -> None:
        """``IMPORTING`` on each target, then ``MIGRATING`` on each source: from now on a
        key its source lacks is answered ``ASK``."""
        for slot, (source, target) in self.moves.items():
            node_client(target).execute_command(
                "CLUSTER SETSLOT", slot, "IMPORTING", self.ids[source.name]
            )
            node_client(source).execute_command(
                "CLUSTER SETSLOT", slot, "MIGRATING", self.ids[target.name]
            )

    def complete(self) -> None:
        """Move each slot's keys to its target and give it the slot, in the order Redis
        documents (target, source, then the rest: the target bumps its config epoch, so
        the cluster's gossip cannot undo the move), then wait until every primary
        agrees on every moved slot's owner."""
        for slot, (source, target) in self.moves.items():
            src = node_client(source)
            while moving := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS",
                                    *moving)  # fmt: skip
            rest = [n for n in self.primaries if n.name not in (source.name, target.name)]
            for node in (target, source, *rest):
                node_client(node).execute_command(
                    "CLUSTER SETSLOT", slot, "NODE", self.ids[target.name]
                )
        wait_until(self.agreed, 30, "every primary naming the moved slots' new owner")

    def agreed(self) -> bool:
        """Whether every primary's ``CLUSTER SLOTS`` gives each moved slot to its target."""
        for node in self.primaries:
            owner: dict[int, int] = {}
            for start, end, primary, *_ in node_client(node).execute_command("CLUSTER SLOTS"):
                for slot in range(int(start), int(end) + 1):
                    owner[slot] = int(primary[1])
            if any(owner.get(slot) != t.port for slot, (_, t) in self.moves.items()):
                return False
        return True
