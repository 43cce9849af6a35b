"""A run's folders and what is written into them (zscrgan.experiments.runfolder)."""
import pickle

from zscrgan.experiments import runfolder
from zscrgan.experiments.runfolder import RunFolder


def test_retrieval_pickle_keeps_every_query_up_to_its_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(runfolder, "MAX_RETRIEVAL_LISTS", 10)
    folder = RunFolder(tmp_path / "run", tmp_path / "res")
    lists = [{q % 3: [q]} for q in range(25)]
    path = folder.write_retrieval(50, {"prec@50": 0.5}, lists)
    kept = pickle.loads(path.read_bytes())
    assert len(kept) == 10 and kept[0] == {0: [0]} and kept[-1] == {24 % 3: [24]}
    path = folder.write_retrieval(50, {"prec@50": 0.25}, lists[:10])
    assert pickle.loads(path.read_bytes()) == lists[:10]
