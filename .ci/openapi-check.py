"""Checks the scoring API's contract, docs/openapi.yaml: the document is valid OpenAPI (openapi-spec-validator),
and, given a JSON-lines file of real answers (`{"status": 200, "body": {...}}` per line, as tests/capture_client.rs
records them), each answer's body conforms to the schema the document gives its status.

Usage: python .ci/openapi-check.py docs/openapi.yaml [answers.jsonl]
Exits non-zero naming each problem."""

import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PATH = "/api/v1/analyze"
BASE = "urn:netanom:openapi"


def pointer(*parts):
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def main(spec_path, answers_path=None):
    with open(spec_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    validate(doc)
    print(f"openapi: {spec_path} is valid OpenAPI {doc['openapi']}")
    if answers_path is None:
        return 0
    registry = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT202012))
    responses = doc["paths"][PATH]["post"]["responses"]
    problems = 0
    checked = 0
    with open(answers_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            answer = json.loads(line)
            status = str(answer["status"])
            if status not in responses:
                print(f"answer {n}: status {status} is not in the contract")
                problems += 1
                continue
            response = responses[status]
            # A response defined once under components is referenced by its status.
            where = response.get("$ref", "#/" + pointer("paths", PATH, "post", "responses", status))
            name = where.rsplit("/", 1)[-1]
            target = where + "/" + pointer("content", "application/json", "schema")
            validator = Draft202012Validator({"$ref": BASE + target}, registry=registry)
            errors = sorted(validator.iter_errors(answer["body"]), key=lambda e: list(e.path))
            for e in errors:
                print(f"answer {n} ({name}): {e.message} at {list(e.absolute_path)}")
            problems += len(errors)
            checked += 1
    print(f"openapi: {checked} answers checked, {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
