"""The reviewer inbox: a web page listing every approval waiting in a namespace (``durable-agent inbox``)."""

from durable_agent.inbox.app import create_app, serving
from durable_agent.inbox.signin import SignIn, SignInError

__all__ = ["SignIn", "SignInError", "create_app", "serving"]
