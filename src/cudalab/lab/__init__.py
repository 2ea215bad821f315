"""The environment as a service: JupyterLab and sshd, hardened, started natively or as the image's command.

``cudalab lab up`` is what the image runs and what works on a bare server: one token-protected
JupyterLab, one sshd that admits only the lab user's public keys, state (token, host keys, logs) in
one persistent folder. :mod:`~cudalab.lab.prepare` checks and writes the configuration,
:mod:`~cudalab.lab.supervise` runs and watches the servers, :mod:`~cudalab.lab.render` prints.
"""
