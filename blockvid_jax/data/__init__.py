"""Data: the `toy_long_video` and `video_folder` tfds builders and the grain pipeline.

Modules are imported by their path (`blockvid_jax.data.pipeline`, ...) so that importing this
package stays free of tfds/grain until they are needed; `toy_grammar` has no heavy imports.
"""
