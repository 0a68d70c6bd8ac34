"""Ray Data jobs that map corpus parsers (:mod:`spoofdet.data.corpora`) to Parquet shards."""
