"""Ways to run the image tower: one module per backend behind one seam (:mod:`.base`), found
by word through :mod:`.registry`; :mod:`.measure` and :mod:`.race` hold what their checks share."""
