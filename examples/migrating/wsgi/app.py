"""A Flask app as it would run under gunicorn (`gunicorn app:app`); Ember serves it whole.

fn deploy examples/migrating/wsgi --wsgi app:app --name wsgi-example
"""

from flask import Flask, abort, jsonify, request, url_for

app = Flask(__name__)

BOOKS = {1: {"title": "Dune", "author": "Frank Herbert"}}


@app.get("/books/<int:book_id>")
def get_book(book_id):
    book = BOOKS.get(book_id) or abort(404)
    return {"id": book_id, **book, "self": url_for("get_book", book_id=book_id)}


@app.post("/books/<int:book_id>/reviews")
def review(book_id):
    posted = request.get_json()
    if not isinstance(posted, dict) or not 1 <= posted.get("stars", 0) <= 5:
        return jsonify(error="stars must be 1 to 5"), 422
    return jsonify(book=book_id, stars=posted["stars"], format=request.args.get("format")), 201
