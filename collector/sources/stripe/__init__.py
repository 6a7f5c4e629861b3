"""Stripe source: payments, revenue, subscriptions, refunds and disputes from webhooks or the Events API."""

from __future__ import annotations

from collector.sources.stripe.source import StripeSource

__all__ = ["StripeSource"]
