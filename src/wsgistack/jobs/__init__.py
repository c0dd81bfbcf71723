"""Test jobs: a project's own tests against its WSGI deployment, on one server or on all
six (`wsgistack test`), and the stack's environment for them (`wsgistack env`)."""

from wsgistack.jobs.artifacts import junit
from wsgistack.jobs.ci import TARGETS as CI_TARGETS
from wsgistack.jobs.ci import write as write_ci
from wsgistack.jobs.environment import formatted, stack_env
from wsgistack.jobs.job import Job, Outcome, arguments, exit_code, make, select
from wsgistack.jobs.report import matrix, progress_line
from wsgistack.jobs.runner import run

__all__ = ["CI_TARGETS", "Job", "Outcome", "arguments", "exit_code", "formatted", "junit",
           "make", "matrix", "progress_line", "run", "select", "stack_env", "write_ci"]
