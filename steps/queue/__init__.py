"""Work orders over RabbitMQ: the order format, the enqueue side and the worker that runs them."""
