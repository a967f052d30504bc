"""The one decision core shared by the DNS filter and the proxy: pure, no I/O, no clock reads."""
