"""Slots held mid-migration on a real Redis Cluster, then moved for good, as
``redis-cli --cluster reshard`` does: for the tests that keep the worker and the API
going through a migration (issue 28, item 7)."""

from __future__ import annotations

import functools
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
        documents (target, source, then the rest), one target's slots at a time, waiting
        between targets until every primary names every moved slot's new owner (and
        telling again any that does not).

        One target at a time because of the config epochs: a node that finishes
        importing a slot bumps its epoch to the newest it knows, and a node that owns
        a slot with keys and hears another claim it with a newer epoch deletes those
        keys. With the slots moving in a ring (each primary to the next), a source
        that had just finished importing from a third node could claim the slot with
        an epoch newer than the target's, in the instant before it was told the slot
        moved, and the target then dropped the slot's keys: lists lost in 3 runs of 4
        of the migration tests. Finished one target at a time, only that target's
        epoch moves, and it is the newest every source has heard of."""
        by_target: dict[str, list[int]] = {}
        for slot, (_, target) in self.moves.items():
            by_target.setdefault(target.name, []).append(slot)
        for slots in by_target.values():
            for slot in slots:
                source, target = self.moves[slot]
                src = node_client(source)
                while moving := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                    src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000,
                                        "KEYS", *moving)  # fmt: skip
                rest = [n for n in self.primaries if n.name not in (source.name, target.name)]
                for node in (target, source, *rest):
                    self._give(node, slot)
            agreed = functools.partial(self.agreed, slots)
            wait_until(agreed, 30, "every primary naming the moved slots' new owner")

    def _give(self, node: Node, slot: int) -> None:
        target = self.moves[slot][1]
        node_client(node).execute_command("CLUSTER SETSLOT", slot, "NODE", self.ids[target.name])

    def agreed(self, slots: Iterable[int]) -> bool:
        """Whether every primary's ``CLUSTER SLOTS`` gives each of ``slots`` to its target;
        a primary that names another owner is told again."""
        agreed = True
        for node in self.primaries:
            owner: dict[int, int] = {}
            for start, end, primary, *_ in node_client(node).execute_command("CLUSTER SLOTS"):
                for slot in range(int(start), int(end) + 1):
                    owner[slot] = int(primary[1])
            for slot in slots:
                if owner.get(slot) != self.moves[slot][1].port:
                    agreed = False
                    self._give(node, slot)
        return agreed
