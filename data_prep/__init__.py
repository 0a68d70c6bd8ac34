"""Ray Data jobs that map corpus parsers (:mod:`spoofdet.corpora`) to Parquet shards."""
