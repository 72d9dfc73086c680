"""Functions for Google Cloud Functions (functions-framework): an HTTP function, a CloudEvent
function and a legacy background function, in one main.py.

    gcloud functions deploy hello_http --runtime python312 --trigger-http
    fn deploy examples/migrating/gcf/main.py --handler hello_http --name gcf-example
"""

import base64

import functions_framework


@functions_framework.http
def hello_http(request):
    request_json = request.get_json(silent=True)
    if request_json and "name" in request_json:
        name = request_json["name"]
    elif "name" in request.args:
        name = request.args["name"]
    else:
        name = "World"
    return {"message": f"Hello {name}!", "path": request.path}


@functions_framework.cloud_event
def hello_pubsub(cloud_event):
    text = base64.b64decode(cloud_event.data["message"]["data"]).decode()
    print(f"{cloud_event['id']}: {text}")


def hello_background(event, context):
    text = base64.b64decode(event["data"]).decode() if "data" in event else "nothing"
    print(f"{context.event_id} ({context.event_type}): {text}")
