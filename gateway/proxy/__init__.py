"""The optional HTTP(S) filtering proxy: SNI relay fast path, mitmproxy for inspection, block page, school CA."""
