"""A trained model as a photo search: the run opened for search (trained), the photo table
(photostore), FAISS gallery indexes in memory and on disk (gallery, diskindex), `zscrgan index`
and its size estimate (index, sizing), embedding shards made locally or with Ray (shards,
distribute), and answering queries on the command line or over HTTP (query, batcher, serve).

May import: the shared top-level modules, core, data and evaluation (never experiments).
"""
