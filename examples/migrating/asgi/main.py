"""A FastAPI app as uvicorn serves it (`uvicorn main:app`); on Ember: fn deploy --asgi main:app."""

from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Startup runs once per instance, before its first request (a failure fails the deploy).
    yield {"prices": {"apple": 0.5, "pear": 0.75}}


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    item: str
    quantity: int = 1


@app.get("/prices/{item}")
def price(item: str, request: Request, currency: str = "EUR"):
    if item not in request.state.prices:
        raise HTTPException(status_code=404, detail=f"no price for {item}")
    return {"item": item, "price": request.state.prices[item], "currency": currency}


@app.post("/orders", status_code=201)
def place_order(order: Order, request: Request):
    total = price(order.item, request)["price"] * order.quantity
    link = request.url_for("price", item=order.item).path  # /fn/NAME/prices/...
    return {"item": order.item, "quantity": order.quantity, "total": total, "price": link}


@app.post("/")
async def on_event(request: Request):
    # Topic, schedule and table events arrive here: a POST to / with the payload.
    return {"received": await request.json()}
