"""The protocol spec: typed values loaded from `specs/`, and their soundness checks."""

from fsm.spec.load import SPEC_FILES, load_documents, load_spec, parse_spec
from fsm.spec.model import (
    CONTINUE,
    STOP,
    Deviation,
    MachineSpec,
    Operation,
    ProbeRoute,
    ResourceSpec,
    Spec,
    Step,
    Transition,
)
from fsm.spec.soundness import Problem, apply_profile, check_spec

__all__ = [
    "CONTINUE",
    "SPEC_FILES",
    "STOP",
    "Deviation",
    "MachineSpec",
    "Operation",
    "ProbeRoute",
    "Problem",
    "ResourceSpec",
    "Spec",
    "Step",
    "Transition",
    "apply_profile",
    "check_spec",
    "load_documents",
    "load_spec",
    "parse_spec",
]
