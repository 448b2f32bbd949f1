"""Command bodies that belong to no single part: ``bench`` (:mod:`.bench`), ``demo``
(:mod:`.demo`), ``info`` and ``verify`` (:mod:`.info`)."""
