"""The weekly quarantine review pages, mounted at ``/quarantine/`` (see views.py for what each serves)."""

from django.urls import path

from controlplane.quarantine import views

app_name = "quarantine"

urlpatterns = [
    path("", views.review_list, name="reviews"),
    path("request/", views.review_request, name="review-request"),
    path("<int:review_id>/", views.review_detail, name="review"),
    path("<int:review_id>/trends/", views.review_trends, name="review-trends"),
    path("<int:review_id>/record.md", views.review_record, name="review-record"),
    path("<int:review_id>/items/<int:item_id>/sample/", views.item_sample, name="item-sample"),
    path("<int:review_id>/items/<int:item_id>/sample.csv", views.item_sample_csv, name="item-sample-csv"),
    path("<int:review_id>/items/<int:item_id>/dispose/", views.item_dispose, name="item-dispose"),
]
