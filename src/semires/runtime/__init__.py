"""What training and evaluation both run on: devices and processes (:mod:`.distributed`), mixed
precision (:mod:`.precision`), text inputs and the frozen-text feature cache (:mod:`.textcache`),
checkpoint files (:mod:`.checkpoint`). Below :mod:`semires.train` and :mod:`semires.evaluate`,
above :mod:`semires.model`; it imports neither of the two."""
