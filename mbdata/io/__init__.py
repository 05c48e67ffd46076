"""Everything that reads or writes bytes: input readers, the canonical Arrow schema, shards and
the manifest, opening a build, exporters, the dataset card and ``mb inspect``."""
