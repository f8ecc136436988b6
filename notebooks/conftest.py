"""nbval run of the tutorial notebooks: one model host for the whole run (`tutorial_host.py`)."""

from tutorial_host import start_tutorial_host

_hosts = []


def pytest_sessionstart(session):
    _hosts.append(start_tutorial_host())


def pytest_sessionfinish(session, exitstatus):
    while _hosts:
        _hosts.pop().stop()
