"""How much a user's input may ask of the farm before it is refused.

Every limit is checked on the text itself, before anything proportional to what the
text *asks for* is allocated: a 96-byte ``qreg q[10000000];`` is refused for its
number, not after ten million qubit objects exist. Defaults live in
``configs/policies.yaml`` under ``intake:``; each error names its limit as
``intake.<field>`` so an operator knows what to raise.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from qrt_ray.models import MAX_CIRCUITS_PER_JOB


class IntakeLimits(BaseModel):
    """Limits of the intake gate (``configs/policies.yaml``, section ``intake``).

    Attributes:
        max_qasm_bytes: UTF-8 bytes of one circuit's OpenQASM text.
        max_job_bytes: bytes of all of one job's circuit texts together.
        max_request_bytes: bytes of one submit call (every job spec's JSON together).
        max_circuits: circuits in one job.
        max_jobs_per_call: jobs in one submit call.
        max_qubits: qubits one circuit may declare (the farm's widest device lowers it).
        max_clbits: classical bits one circuit may declare.
        max_gates: operations of one circuit once every gate definition and register
            broadcast is expanded.
        max_gate_expansion: operations one call of a user-defined gate may expand to.
        max_definition_depth: gate definitions that call each other, innermost first.
        max_nesting: parentheses, brackets, braces and unary signs inside each other.
        max_operators: operators in one statement.
        max_parameters: parameters of one gate definition or call.
        max_pow_qubits: qubits of a gate under ``pow(k) @`` (raised as a matrix of
            4^n entries).
        parse_timeout_s: seconds one circuit may take to be checked and parsed.
        memory_mb: memory a parser process may take on top of what it holds idle.
        workers: parser processes beside the scheduler (none of them is its event loop).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_qasm_bytes: int = Field(default=2 * 2**20, ge=1024)
    max_job_bytes: int = Field(default=64 * 2**20, ge=1024)
    max_request_bytes: int = Field(default=128 * 2**20, ge=1024)
    max_circuits: int = Field(default=MAX_CIRCUITS_PER_JOB, ge=1, le=MAX_CIRCUITS_PER_JOB)
    max_jobs_per_call: int = Field(default=10_000, ge=1)
    max_qubits: int = Field(default=1024, ge=1)
    max_clbits: int = Field(default=4096, ge=1)
    max_gates: int = Field(default=200_000, ge=1)
    max_gate_expansion: int = Field(default=10_000, ge=1)
    max_definition_depth: int = Field(default=32, ge=1)
    max_nesting: int = Field(default=64, ge=1)
    max_operators: int = Field(default=1_000, ge=1)
    max_parameters: int = Field(default=64, ge=1)
    max_pow_qubits: int = Field(default=10, ge=1, le=14)
    parse_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    memory_mb: int = Field(default=2048, ge=64)
    workers: int = Field(default=2, ge=1, le=64)
