"""Infrastructure shared by every part of mbdefense: errors (exit codes), atomic writes, the strict
config machinery, input limits, registries and the plugin entry points. Nothing here knows about
stages or shards; mbtrain imports from here, never the other way round."""
