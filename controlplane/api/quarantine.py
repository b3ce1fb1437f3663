"""REST API v1, quarantine section: weekly reviews for bots (list, read, request one) and dispositions on a
review's items. Thin: each view validates, calls one service or selector of ``controlplane.quarantine``,
renders. Requests and dispositions go through the action path (``actions:write``, policy, approval)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.actions import selectors as action_selectors
from controlplane.api import queries as q
from controlplane.api import serializers as s
from controlplane.api.auth import rules
from controlplane.api.views import Cursor, idempotency_key_of
from controlplane.errors import NotFound
from controlplane.quarantine import selectors, services
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem


class DispositionSerializer(serializers.ModelSerializer[Disposition]):
    decided_by = serializers.CharField(source="decided_by.username", read_only=True)
    action = serializers.UUIDField(source="action_id", read_only=True, allow_null=True)
    incident = serializers.IntegerField(source="incident_id", read_only=True, allow_null=True)

    class Meta:
        model = Disposition
        fields = [
            "id",
            "kind",
            "state",
            "note",
            "expires",
            "decided_by",
            "requested_at",
            "decided_at",
            "action",
            "incident",
            "counts",
        ]


class ReviewItemSerializer(serializers.ModelSerializer[ReviewItem]):
    dispositions = DispositionSerializer(many=True, read_only=True)

    class Meta:
        model = ReviewItem
        fields = [
            "id",
            "table",
            "reason",
            "count",
            "previous_week",
            "new",
            "over_threshold",
            "needs_disposition",
            "first_seen",
            "last_seen",
            "dispositions",
        ]


class ReviewSummarySerializer(serializers.ModelSerializer[QuarantineReview]):
    target = serializers.CharField(source="target.key", read_only=True)
    environment = serializers.CharField(source="target.connection.environment.name", read_only=True)
    status = serializers.ChoiceField(choices=["open", "done"], read_only=True)

    class Meta:
        model = QuarantineReview
        fields = [
            "id",
            "target",
            "environment",
            "week_start",
            "week_end",
            "status",
            "threshold_pct",
            "created_at",
            "completed_at",
        ]


class ReviewDetailSerializer(ReviewSummarySerializer):
    created_by_action = serializers.UUIDField(source="created_by_action_id", read_only=True, allow_null=True)
    summary = serializers.JSONField(read_only=True)
    escalations = serializers.JSONField(read_only=True)
    breaches = serializers.JSONField(read_only=True)
    items = ReviewItemSerializer(many=True, read_only=True)

    class Meta(ReviewSummarySerializer.Meta):
        fields = [
            *ReviewSummarySerializer.Meta.fields,
            "created_by_action",
            "summary",
            "escalations",
            "breaches",
            "items",
        ]


class ReviewListQuery(q.PageQuery):
    status = serializers.ChoiceField(required=False, choices=["open", "done", "all"])
    target = serializers.CharField(required=False, max_length=200, help_text="a quarantine source's target key")


class ReviewRequestSerializer(s.StrictSerializer):
    target = serializers.CharField(max_length=200, help_text="a quarantine source's target key")
    week_end = serializers.DateField(
        required=False, allow_null=True, help_text="the Sunday ending the week (default: the last one)"
    )


class DispositionRequestSerializer(s.StrictSerializer):
    kind = serializers.ChoiceField(choices=Disposition.Kind.values)
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    from_date = serializers.DateField(required=False, help_text="narrow the review's week (release/discard/keep)")
    to_date = serializers.DateField(required=False)
    expires = serializers.DateField(required=False, help_text="keep: until when")


class ReviewCursor(Cursor):
    ordering = "-id"


@extend_schema_view(get=extend_schema(parameters=[ReviewListQuery]))
class ReviewCollection(ListAPIView[Any]):
    """``GET``: reviews, newest first (``?status=open|done|all &target=``); ``POST`` ``{"target", "week_end"}``:
    request the source's ``quarantine-review`` action (the review is made when it succeeds)."""

    access = rules(get=("viewer", "quarantine:read"), post=("responder", "actions:write"))
    serializer_class = ReviewSummarySerializer
    pagination_class = ReviewCursor

    def get_queryset(self) -> Any:
        found = q.valid_query(ReviewListQuery, self.request.query_params)
        return selectors.review_list(target_key=found.get("target"), status=found.get("status")).order_by("-id")

    @extend_schema(
        request=ReviewRequestSerializer,
        responses={202: s.ActionDetailSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        serializer = ReviewRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        action = services.review_request(
            actor=request.user,
            target_key=data["target"],
            week_end=data.get("week_end"),
            idempotency_key=idempotency_key_of(request),
        )
        return Response(s.ActionDetailSerializer(action_selectors.action_get(action.id)).data, status=202)


class ReviewDetail(APIView):
    """One review with its items (table, reason, counts, whether it needs a disposition) and their
    dispositions."""

    access = rules(get=("viewer", "quarantine:read"))

    @extend_schema(responses=ReviewDetailSerializer)
    def get(self, request: Request, review_id: int) -> Response:
        return Response(ReviewDetailSerializer(selectors.review_detail(review_id=review_id)).data)


class ItemDispositions(APIView):
    """``POST`` ``{"kind", "note", "from_date", "to_date", "expires"}``: decide on one item of a review
    (release, discard, keep: an action through the action path; escalate: an incident at once)."""

    access = rules(post=("responder", "actions:write"))

    @extend_schema(request=DispositionRequestSerializer, responses={201: DispositionSerializer})
    def post(self, request: Request, review_id: int, item_id: int) -> Response:
        serializer = DispositionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        item = selectors.review_item(review_id=review_id, item_id=item_id)
        params = {k: data[k].isoformat() for k in ("from_date", "to_date", "expires") if data.get(k) is not None}
        disposition = services.disposition_request(
            actor=request.user, item_id=item.pk, kind=data["kind"], params=params, note=data.get("note", "")
        )
        found = Disposition.objects.select_related("decided_by").filter(pk=disposition.pk).first()
        if found is None:  # pragma: no cover - deleted between the write and this read
            raise NotFound(f"no disposition {disposition.pk}")
        return Response(DispositionSerializer(found).data, status=201)
