"""The alternative "model server": FastAPI + uvicorn + onnxruntime, one HTTP request per event.

The shape of KServe's or Seldon's synchronous serving (a JSON body in, a JSON prediction out),
written as a user would write it: a pydantic request model, one ``InferenceSession.run`` per
request on the same ONNX file predict serves, one uvicorn worker (uvloop and httptools, the
fastest uvicorn set-up) with access logs off.

    python -m bench.rest_server --port P --artifacts DIR [--model agrawal]
"""

# No ``from __future__ import annotations``: FastAPI reads the request model from the
# signature at run time.
import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from .faust_agent import model_session

__all__ = ["PredictRequest", "create_app", "main"]


class PredictRequest(BaseModel):
    features: dict[str, float]


def create_app(artifacts: Path, model: str) -> FastAPI:
    session, names, version = model_session(artifacts, model)
    app = FastAPI(title=f"{model} v{version}")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "model": model, "version": version}

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        missing = [n for n in names if n not in req.features]
        if missing:
            raise HTTPException(422, f"missing features: {', '.join(missing)}")
        x = np.array([[req.features[n] for n in names]], dtype=np.float32)
        label, proba = session.run(None, {"features": x})
        return {"model": model, "model_version": version, "label": str(label[0]),
                "score": float(proba[0][1]), "predicted_at": int(time.time() * 1000)}

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--model", default="agrawal")
    args = p.parse_args(argv)
    uvicorn.run(create_app(args.artifacts, args.model), host=args.host, port=args.port,
                workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
