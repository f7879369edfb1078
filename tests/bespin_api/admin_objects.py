"""What a bespin-api admin sets up before users can run a workflow, made with bespin's own models (Django
ORM; bespin's REST API does not create job runtimes or cloud settings). Run by the tests with bespin-api's
Python in its source dir:

    DATABASE_URL=... $BESPIN/venv/bin/python admin_objects.py '{"queue": ..., "workflow_url": ..., ...}'

The first run in a database also makes the admin and user accounts with their tokens, bespin's own DukeDS
credential (bespin gives every job a DukeDS output project) and its e-mail templates. Every run makes one
workflow set-up of its own: a LandoConnection on the test's queue, cloud settings, a job runtime (base, pre-
and post-process commands, image), job settings, a flavor, a strategy, a workflow version (packed, served
over http) with its methods document, and a configuration with a share group. It prints JSON: the workflow
tag users create jobs with, and the ids made.
"""
import json
import os
import sys
import uuid

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bespin.settings")
import django  # noqa: E402

django.setup()
from data.models import (  # noqa: E402
    CloudSettingsOpenStack,
    DDSUser,
    EmailTemplate,
    JobFlavor,
    JobRuntimeOpenStack,
    JobSettings,
    JobStrategy,
    LandoConnection,
    ShareGroup,
    VMProject,
    Workflow,
    WorkflowConfiguration,
    WorkflowMethodsDocument,
    WorkflowVersion,
)
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from gcb_web_auth.models import DDSEndpoint, DDSUserCredential  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

spec = json.loads(sys.argv[1])
tokens = spec["tokens"]

admin, _ = User.objects.get_or_create(username="bespinadmin", defaults=dict(is_staff=True, is_superuser=True,
                                                                          email="bespinadmin@example.org"))
Token.objects.get_or_create(user=admin, key=tokens["admin"])
user, _ = User.objects.get_or_create(username="bespinuser", defaults=dict(email="bespinuser@example.org"))
Token.objects.get_or_create(user=user, key=tokens["user"])
# bespin makes every job a DukeDS output project with its own DukeDS credential (DukeDS itself is not used here)
endpoint, _ = DDSEndpoint.objects.get_or_create(
    name="example-dds", defaults=dict(agent_key="agentkey", api_root="https://dds.example.org/api/v1",
                                      portal_root="https://dds.example.org", openid_provider_service_id="x",
                                      openid_provider_id="y"))
DDSUserCredential.objects.get_or_create(endpoint=endpoint, user=admin,
                                        defaults=dict(token="ddstoken", dds_id="example-bespin-dds-id"))
if not EmailTemplate.objects.exists():
    call_command("loaddata", os.path.join(os.getcwd(), "fixtures", "emailtemplates.yaml"))

unique = uuid.uuid4().hex[:10]
group = spec.get("share_group") or {"name": "Informatics", "email": "informatics@example.org",
                                    "users": [["Bespin Informatics", "c1d2e3f4-informatics"]]}
share = ShareGroup.objects.create(name=f"{group['name']} {unique}", email=group["email"])
for name, dds_id in group["users"]:
    dds_user, _ = DDSUser.objects.get_or_create(dds_id=dds_id, defaults=dict(name=name))
    share.users.add(dds_user)
connection = LandoConnection.objects.create(host="127.0.0.1", username="guest", password="guest",
                                            queue_name=spec["queue"])
project, _ = VMProject.objects.get_or_create(name=spec.get("vm_project") or "lando")
cloud = CloudSettingsOpenStack.objects.create(
    name=f"cloud-{unique}", vm_project=project, ssh_key_name=spec.get("ssh_key_name") or "",
    network_name=spec.get("network_name") or "", allocate_floating_ips=False, floating_ip_pool_name="")
runtime = JobRuntimeOpenStack.objects.create(
    cloud_settings=cloud, image_name=spec.get("image") or "local",
    cwl_base_command=json.dumps(spec.get("cwl_base_command") or ["cwltool", "--no-container"]),
    cwl_pre_process_command=json.dumps(spec.get("cwl_pre_process_command") or []),
    cwl_post_process_command=json.dumps(spec.get("cwl_post_process_command") or []))
settings = JobSettings.objects.create(name=f"settings-{unique}", lando_connection=connection,
                                      job_runtime_openstack=runtime)
flavor, _ = JobFlavor.objects.get_or_create(name=spec.get("flavor") or "m1.small", defaults=dict(cpus=1, memory="2G"))
strategy = JobStrategy.objects.create(name=f"strategy-{unique}", job_settings=settings, job_flavor=flavor,
                                      volume_size_base=spec.get("volume_size", 0), volume_size_factor=0)
workflow = Workflow.objects.create(tag=f"wf-{unique}", name=spec.get("name") or f"test workflow {unique}")
version = WorkflowVersion.objects.create(
    workflow=workflow, version="1", description="a test workflow", type=spec.get("type") or "packed",
    workflow_path=spec.get("workflow_path", "#main"), url=spec["workflow_url"],
    version_info_url="http://127.0.0.1/", fields=spec.get("fields") or [])
if spec.get("methods"):
    WorkflowMethodsDocument.objects.create(workflow_version=version, content=spec["methods"])
WorkflowConfiguration.objects.create(workflow=workflow, tag="default", system_job_order={},
                                     default_job_strategy=strategy, share_group=share)
print(json.dumps({"tag": f"{workflow.tag}/1/default", "share_group": share.id, "workflow_version": version.id}))
