"""The HTTP endpoint's routes, one module (one APIRouter) per resource."""
