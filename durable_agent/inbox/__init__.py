"""The reviewer inbox: a web page listing the approvals a reviewer may decide (``durable-agent inbox``)."""

from durable_agent.inbox.access import Deciders
from durable_agent.inbox.app import create_app, serving
from durable_agent.inbox.signin import SignIn, SignInError

__all__ = ["Deciders", "SignIn", "SignInError", "create_app", "serving"]
