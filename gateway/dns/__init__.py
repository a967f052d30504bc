"""DNS filter: listeners, raw-bytes wire handling, answers, cache, upstreams, stages."""
