"""Checks every IAM role in deploy/*.yaml against the permissions table in
deploy/README.md: each role must hold exactly the actions the guide lists
for it, no wildcard actions, and "*" as a resource only for actions that
name no resource. Uses cfn-lint's template loader (it knows
the CloudFormation short-form tags). Run by tests/tests/deploy.rs.

Two grants are checked statement by statement as well: the prober's
KeyValueStore statement holds exactly cloudfront-keyvaluestore:DescribeKeyValueStore
and cloudfront-keyvaluestore:UpdateKeys, on the store the KeyValueStoreArn
parameter names and nothing else; and the CloudFront Function template
defines no IAM resource at all (a CloudFront Function has no role)."""

import pathlib
import re
import sys

from cfnlint.decode import decode

root = pathlib.Path(__file__).resolve().parents[1]
guide = (root / "README.md").read_text()

documented = {}
for line in guide.splitlines():
    m = re.match(r"^\|\s*`([\w.-]+\.yaml)`\s+(\w+)\s*\|([^|]*)\|", line)
    if m:
        documented[(m.group(1), m.group(2))] = set(re.findall(r"`([a-z0-9-]+:[A-Za-z*]+)`", m.group(3)))

def branches(value):
    """The items a value may be: both branches of an Fn::If (a conditional
    statement grants its actions whenever its condition holds), none for
    AWS::NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value

def actions_of(role):
    found = set()
    props = role.get("Properties", {})
    # A policy may itself be conditional (Fn::If around a whole policy).
    for entry in props.get("Policies", []):
        for policy in branches(entry):
            statements = policy["PolicyDocument"]["Statement"]
            for item in statements if isinstance(statements, list) else [statements]:
                for st in branches(item):
                    acts = st.get("Action", [])
                    acts = acts if isinstance(acts, list) else [acts]
                    found.update(acts)
                    resources = st.get("Resource", [])
                    resources = [
                        r
                        for item in (resources if isinstance(resources, list) else [resources])
                        for r in branches(item)
                    ]
                    if "*" in resources:
                        star_actions.update(acts)
    if props.get("ManagedPolicyArns"):
        found.add("<managed policy>")
    return found

# Actions that name no resource, so "*" is the only way to grant them.
RESOURCELESS = {"ecr:GetAuthorizationToken"}
star_actions = set()

failures = []
seen = set()
for template in sorted(root.glob("*.yaml")):
    doc, matches = decode(str(template))
    if matches:
        failures.append(f"{template.name}: cannot parse: {matches}")
        continue
    for name, res in doc.get("Resources", {}).items():
        if res.get("Type") != "AWS::IAM::Role":
            continue
        key = (template.name, name)
        seen.add(key)
        actual = actions_of(res)
        expected = documented.get(key)
        if expected is None:
            failures.append(f"{template.name} {name}: role not in the guide's permissions table")
        elif actual != expected:
            failures.append(f"{template.name} {name}: template {sorted(actual)} != guide {sorted(expected)}")
        for a in actual:
            if "*" in a:
                failures.append(f"{template.name} {name}: wildcard action {a}")

def statements_of(role):
    """Every statement a role may hold (both branches of each Fn::If)."""
    for entry in role.get("Properties", {}).get("Policies", []):
        for policy in branches(entry):
            statements = policy["PolicyDocument"]["Statement"]
            for item in statements if isinstance(statements, list) else [statements]:
                yield from branches(item)

KVS_ACTIONS = ["cloudfront-keyvaluestore:DescribeKeyValueStore", "cloudfront-keyvaluestore:UpdateKeys"]
kvs_checked = False
prober, matches = decode(str(root / "prober.yaml"))
if not matches:
    kvs = [
        st
        for st in statements_of(prober["Resources"]["TaskRole"])
        if any(str(a).startswith("cloudfront-keyvaluestore:") for a in (st.get("Action") if isinstance(st.get("Action"), list) else [st.get("Action")]))
    ]
    if len(kvs) != 1:
        failures.append(f"prober.yaml TaskRole: {len(kvs)} KeyValueStore statements, expected exactly 1")
    else:
        st = kvs[0]
        acts = st.get("Action") if isinstance(st.get("Action"), list) else [st.get("Action")]
        if sorted(acts) != KVS_ACTIONS:
            failures.append(f"prober.yaml TaskRole: KeyValueStore actions {sorted(acts)} != {KVS_ACTIONS}")
        if st.get("Effect") != "Allow" or st.get("Resource") != {"Ref": "KeyValueStoreArn"}:
            failures.append(f"prober.yaml TaskRole: KeyValueStore statement must allow on the KeyValueStoreArn parameter only, not {st.get('Resource')!r}")
        if set(st) - {"Effect", "Action", "Resource"}:
            failures.append(f"prober.yaml TaskRole: KeyValueStore statement has extra keys {sorted(set(st) - {'Effect', 'Action', 'Resource'})}")
        kvs_checked = True
    if "KeyValueStoreArn" not in prober.get("Parameters", {}):
        failures.append("prober.yaml: no KeyValueStoreArn parameter")

function_checked = False
function, matches = decode(str(root / "function.yaml"))
if not matches:
    for name, res in function.get("Resources", {}).items():
        if str(res.get("Type", "")).startswith("AWS::IAM::"):
            failures.append(f"function.yaml {name}: {res['Type']}: a CloudFront Function has no IAM role")
        if res.get("Type") == "AWS::CloudFront::Function":
            props = res.get("Properties", {})
            if props.get("FunctionConfig", {}).get("Runtime") != "cloudfront-js-2.0":
                failures.append(f"function.yaml {name}: runtime must be cloudfront-js-2.0 (KeyValueStore)")
            if any("role" in key.lower() for key in props):
                failures.append(f"function.yaml {name}: a CloudFront Function takes no role")
            function_checked = True
    if not function_checked:
        failures.append("function.yaml: no AWS::CloudFront::Function")

for a in sorted(star_actions - RESOURCELESS):
    failures.append(f"{a} is granted on every resource (\"*\")")

for key in documented:
    if key not in seen:
        failures.append(f"guide lists {key[0]} {key[1]}, which no template defines")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"ok: {len(seen)} roles match the guide")
if kvs_checked:
    print("ok: the probers' KeyValueStore grant is DescribeKeyValueStore and UpdateKeys on KeyValueStoreArn only")
if function_checked:
    print("ok: the CloudFront Function template defines no IAM role")
