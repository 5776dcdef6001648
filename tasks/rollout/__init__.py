"""Safe rollout: routing (decide), lane metrics, breaker, shadow, comparator, controller."""
