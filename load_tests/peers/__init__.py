"""The servers livesell is measured against, each as a small program written the way its
community documents it. Their libraries are installed at bench time; none is vendored here.

Every relay peer subscribes to the same Redis pub/sub channel livesell's hub does (SSUBSCRIBE:
livesell publishes with SPUBLISH) and forwards each message on its own, as the push frame a
Centrifugo client expects.
"""
