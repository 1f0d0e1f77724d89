"""The cluster tier's fixtures live in ``tests/kube_session.py``, shared with the e2e tier
(one control plane per session)."""
