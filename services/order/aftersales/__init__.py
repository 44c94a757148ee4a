"""After-sales in the order service: returns (with the supplier's RMA), refunds, complaints."""
