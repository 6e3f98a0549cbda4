"""``exchange demo``: the whole loop on one machine (see :mod:`exchange.demo.run`)."""
