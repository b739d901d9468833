"""/proc/net/dev parsing against a file recorded on this kind of host."""

from __future__ import annotations

from pathlib import Path

import pytest
from sycri.runtime.stats import netstats

RECORDED = (Path(__file__).parent / "data" / "net" / "proc_net_dev").read_text()


def test_recorded_proc_net_dev():
    ifaces = {i.name: i for i in netstats.parse_net_dev(RECORDED)}
    assert list(ifaces) == ["lo", "ifb0", "ifb1", "eth0", "syt8e7e84ec7f", "vethcf8563ae"]
    eth0 = ifaces["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.tx_bytes, eth0.tx_packets) == (
        479759607,
        12913,
        733789,
        6930,
    )
    assert ifaces["syt8e7e84ec7f"].tx_dropped == 2


def test_name_glued_to_counter():
    # The kernel pads names to 6 columns; a long name and a big counter touch.
    text = "h1\nh2\nveth0123456789:4294967296 1 2 3 0 0 0 0 7 8 9 10 0 0 0 0\n"
    [i] = netstats.parse_net_dev(text)
    assert (i.name, i.rx_bytes, i.rx_errors, i.tx_bytes, i.tx_errors) == (
        "veth0123456789",
        4294967296,
        2,
        7,
        9,
    )


@pytest.mark.parametrize("line", ["eth0 1 2 3", "eth0: 1 2 3", "eth0: " + "x " * 16])
def test_malformed_lines_are_refused(line):
    with pytest.raises(netstats.NetDevParseError, match="line 3"):
        netstats.parse_net_dev("h1\nh2\n" + line + "\n")


def test_default_interface():
    ifaces = netstats.parse_net_dev(RECORDED)
    assert netstats.default_interface(ifaces) == "eth0"
    assert netstats.default_interface([i for i in ifaces if i.name != "eth0"]) == "ifb0"
    assert netstats.default_interface([i for i in ifaces if i.name == "lo"]) is None
